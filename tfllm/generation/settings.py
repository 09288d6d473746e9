"""Decoding settings, shared by every generation path (kept free of TensorFlow, so a client of
a served model can hold them without importing it)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass


@dataclass
class GenerationConfig:
    """Decoding settings.

    Attributes:
        max_new_tokens: tokens to generate after each prompt.
        temperature: 0 for greedy; otherwise the softmax temperature.
        top_k: keep the k most likely tokens (0 keeps all).
        top_p: nucleus mass (1.0 keeps all).
        num_return_sequences: samples per prompt.
        seed: stateless sampling seed.
        stop: stop strings: a completion ends before the first one (single-token ones also
            end the row inside the graph; see `tfllm.generation.prompts`).
        stop_at_eos: also stop at the tokenizer's eos token.
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    num_return_sequences: int = 1
    seed: int = 0
    stop: tuple[str, ...] = ()
    stop_at_eos: bool = True

    def validate(self) -> None:
        """Raise `TypeError` for a setting of the wrong type, `ValueError` for one out of
        range."""
        for name in ("max_new_tokens", "top_k", "num_return_sequences", "seed"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise TypeError(f"{name} must be a whole number, got {value!r}")
        for name in ("temperature", "top_p"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool):
                raise TypeError(f"{name} must be a number, got {value!r}")
        if isinstance(self.stop, str) or not all(isinstance(s, str) for s in self.stop):
            raise TypeError(f"stop must be a sequence of strings, got {self.stop!r}")
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {self.max_new_tokens}")
        if not 0 <= self.temperature < float("inf"):
            raise ValueError(f"temperature must be finite and >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.num_return_sequences <= 0:
            raise ValueError(
                f"num_return_sequences must be positive, got {self.num_return_sequences}"
            )
