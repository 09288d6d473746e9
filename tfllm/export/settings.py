"""An export's settings (`tfllm export`'s `export.` keys), checked without TensorFlow so the
command refuses a bad value before its slow imports; `serving_module` builds the graphs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tfllm.generation.settings import GenerationConfig


@dataclass
class ExportSettings:
    """What an export fixes at export time.

    Attributes:
        max_new_tokens: `serving_default`'s length (and `generate`'s when a request sends 0);
            None: half the model's context, at most 64 (`default_new_tokens`), so a prompt
            has room.
        max_new_tokens_limit: the largest `max_new_tokens` a request may ask for.
        temperature, top_k, top_p, seed: `serving_default`'s sampling settings.
        jit_compile: XLA-compile the decode loop (TF Serving needs
            `--xla_cpu_compilation_enabled=true` to run it).
        safety: a graph-capable `safety_filter` spec (e.g. `{name: patterns, words: [...]}`);
            the generation signatures then also output `flagged` (bool `[B]`), and its
            `redact` or `block` action rewrites the completions.
        stop: stop strings, applied as `tfllm generate stop=` applies them (see
            `tfllm.generation.prompts`): a completion ends before the first one.
        sequence_length: tokens a classifier, reward model or fill-mask export reads (None:
            the training data's `sequence_length`, within the model's context).
        text_feature, pair_feature: the `tf.Example` features a classifier's Classify
            signature reads (the second for pair tasks).
        prompt_feature, reply_feature: the `tf.Example` features a reward model's Regress
            signature reads.
        fill_mask_top_k: fillers a fill-mask export returns per mask.
        max_num_beams: the widest beam an encoder-decoder's `beam` signature accepts.
        qa_max_windows: the most windows an extractive QA export reads of one context (longer
            contexts are INVALID_ARGUMENT).
    """

    max_new_tokens: int | None = None
    max_new_tokens_limit: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    jit_compile: bool = False
    safety: dict[str, Any] | None = None
    stop: tuple[str, ...] = ()
    sequence_length: int | None = None
    text_feature: str = "text"
    pair_feature: str = "text_pair"
    prompt_feature: str = "prompt"
    reply_feature: str = "reply"
    fill_mask_top_k: int = 5
    max_num_beams: int = 8
    qa_max_windows: int = 8

    def safety_filter(self):
        """The configured safety filter, or None; it must run inside a graph."""
        from tfllm import registry
        from tfllm.components.safety.base import build_safety_filter

        if self.safety is None:
            return None
        name = self.safety.get("name")
        if name and not getattr(registry.get("safety_filter", name), "graph_capable", False):
            raise ValueError(
                f"safety: filter '{name}' runs only in Python; an export needs one that runs in "
                "the graph, such as patterns"
            )
        return build_safety_filter(self.safety, key="export.safety")

    def validate(self) -> None:
        """The sampling settings pass `GenerationConfig`'s checks and the default fits the limit."""
        GenerationConfig(
            max_new_tokens=self.max_new_tokens or 1,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            seed=self.seed,
            stop=tuple(self.stop),
        ).validate()
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop must be a list of non-empty strings, got {list(self.stop)}")
        if self.max_new_tokens is not None and not (
            1 <= self.max_new_tokens <= self.max_new_tokens_limit
        ):
            raise ValueError(
                f"max_new_tokens must be in [1, max_new_tokens_limit={self.max_new_tokens_limit}]"
                f", got {self.max_new_tokens}"
            )
        if self.sequence_length is not None and self.sequence_length < 2:
            raise ValueError(f"sequence_length must be at least 2, got {self.sequence_length}")
        if self.max_num_beams < 1:
            raise ValueError(f"max_num_beams must be at least 1, got {self.max_num_beams}")
        if self.fill_mask_top_k < 1:
            raise ValueError(f"fill_mask_top_k must be at least 1, got {self.fill_mask_top_k}")
        self.safety_filter()
