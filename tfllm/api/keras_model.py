"""A trained run or converted checkpoint in Python: generate, chat, score, embed, classify."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tfllm.api.answers import as_list, shaped


class KerasModel:
    """A tfllm model and its tokenizer, with one method per thing it can do. Every method
    follows the rules the CLI and the exports follow (`tfllm.generation.prompts` for prompts and
    lengths), so an answer here is the answer `tfllm generate`, `tfllm chat` and a served export
    give for the same request.

    Args:
        model: the Keras model (a `tfllm.tasks` model).
        tokenizer: its tokenizer.
        config: the run's resolved config.
        path: where it was loaded from.
        jit_compile: XLA-compile generation.

    Example:

    >>> import tfllm
    >>> lm = tfllm.load("runs/default")  # doctest: +SKIP
    >>> lm.generate("ROMEO:", max_new_tokens=16)  # doctest: +SKIP
    """

    def __init__(self, model, tokenizer, config: dict[str, Any], path: str = "", jit_compile=False):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.path = path
        self.jit_compile = jit_compile
        self._generator = None

    @classmethod
    def from_run(cls, path: str, jit_compile: bool = False) -> KerasModel:
        """Load a training run or a converted checkpoint directory."""
        from tfllm.runs import load_run

        model, tokenizer, config = load_run(path)
        return cls(model, tokenizer, config, path, jit_compile)

    @property
    def task(self) -> str:
        """The task the model was trained for (`causal_lm`, `classify`, `seq2seq`, ...)."""
        return str(self.config["task"]["name"])

    @property
    def context(self) -> int:
        """The model's context: the most tokens it reads at once."""
        return int(self.model.max_sequence_length)

    def __repr__(self) -> str:
        return f"KerasModel(task={self.task!r}, context={self.context}, path={self.path!r})"

    def _require(self, method: str, ok: bool) -> None:
        if not ok:
            raise TypeError(f"a {self.task} model cannot {method}")

    # ----- generation ----------------------------------------------------------------------
    def _generating(self):
        from tfllm.generation.seq2seq import make_generator

        self._require("generate", hasattr(self.model, "call_with_cache") or self.task == "seq2seq")
        if self._generator is None:
            self._generator = make_generator(self.model, self.tokenizer, self.jit_compile)
        return self._generator

    def complete(
        self,
        prompts: str | Sequence[str],
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: Sequence[str] = (),
        num_return_sequences: int = 1,
        stop_at_eos: bool = True,
    ) -> Any:
        """Completions with their token ids and finish reasons (`tfllm.generation.prompts.
        Completion`): one for one prompt, a list for a list (a list per prompt when
        `num_return_sequences > 1`)."""
        from tfllm.generation.decoder import GenerationConfig

        texts, single = as_list(prompts, "prompts")
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            num_return_sequences=num_return_sequences,
            seed=seed,
            stop=tuple(stop),
            stop_at_eos=stop_at_eos,
        )
        return shaped(self._generating().complete(texts, config), single, num_return_sequences)

    def generate(
        self,
        prompts: str | Sequence[str],
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: Sequence[str] = (),
        num_return_sequences: int = 1,
        stop_at_eos: bool = True,
        num_beams: int = 1,
        length_penalty: float = 1.0,
    ) -> Any:
        """Completion texts (without the prompt; an encoder-decoder's outputs): a string for a
        string, a list for a list (a list per prompt when `num_return_sequences > 1`).
        `num_beams > 1` searches beams instead of sampling."""
        texts, single = as_list(prompts, "prompts")
        if num_beams > 1:
            from tfllm.generation.beam import beam_generate

            self._generating()
            rows = beam_generate(
                self.model,
                self.tokenizer,
                texts,
                num_beams=num_beams,
                max_new_tokens=max_new_tokens,
                length_penalty=length_penalty,
                num_return_sequences=num_return_sequences,
                stop_at_eos=stop_at_eos,
                stop=stop,
            )
            return shaped(rows, single, num_return_sequences)
        found = self.complete(
            texts,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            seed,
            stop,
            num_return_sequences,
            stop_at_eos,
        )
        rows = found if num_return_sequences > 1 else [[c] for c in found]
        return shaped([[c.text for c in row] for row in rows], single, num_return_sequences)

    def chat(self, system_prompt: str | None = None, template: str | None = None, **sampling):
        """A `tfllm.generation.chat.ChatSession` with this model's chat template (or
        `template`); `sampling` takes `GenerationConfig`'s settings (`max_new_tokens`,
        `temperature`, ...). Call `.reply(message)` on it."""
        from tfllm.generation.chat import ChatSession
        from tfllm.generation.decoder import GenerationConfig

        self._require("chat", hasattr(self.model, "call_with_cache"))
        template = template or (self.config.get("chat") or {}).get("template")
        config = GenerationConfig(**{"max_new_tokens": 256, **sampling})
        return ChatSession(
            self.model, self.tokenizer, template, system_prompt, config, self.jit_compile
        )

    # ----- scoring and encoders -------------------------------------------------------------
    def score(self, texts: str | Sequence[str], targets: Sequence[str] | None = None) -> Any:
        """Log-likelihoods: of each text under a causal LM (bos first, as the exports' `score`
        counts it), or of each target given its source text for an encoder-decoder."""
        import tensorflow as tf

        from tfllm.generation.prompts import prompt_ids

        items, single = as_list(texts, "texts")
        if self.task == "seq2seq":
            if targets is None or len(list(targets)) != len(items):
                raise ValueError("an encoder-decoder scores targets: pass one per text")
            out = self.model.score_texts(self.tokenizer, items, list(targets))
            return float(out[0]) if single else np.asarray(out)
        self._require("score texts", hasattr(self.model, "call_with_cache"))
        rows = [prompt_ids(self.tokenizer, t) for t in items]
        for text, row in zip(items, rows, strict=True):
            if not 2 <= len(row) <= self.context:
                raise ValueError(
                    f"{text[:40]!r}: {len(row)} tokens; a scored text needs 2 to {self.context}"
                )
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0
        dense = np.full((len(rows), width), pad, np.int32)
        mask = np.zeros((len(rows), width), bool)
        for i, row in enumerate(rows):
            dense[i, : len(row)], mask[i, : len(row)] = row, True
        logits = self.model(tf.constant(dense), padding_mask=tf.constant(mask))  # (B, T, V)
        log_probs = tf.nn.log_softmax(tf.cast(logits[:, :-1], tf.float32), axis=-1).numpy()
        picked = np.take_along_axis(log_probs, dense[:, 1:, None], axis=-1)[..., 0]  # (B, T-1)
        totals = np.where(mask[:, 1:], picked, 0.0).sum(axis=-1)
        return float(totals[0]) if single else totals

    def embed(self, texts: str | Sequence[str]) -> np.ndarray:
        """L2-normalized sentence embeddings: `(D,)` for a string, `(N, D)` for a list."""
        self._require("embed", hasattr(self.model, "embed_texts"))
        items, single = as_list(texts, "texts")
        max_length = (self.config.get("embedding") or {}).get("max_length")
        vectors = np.asarray(self.model.embed_texts(self.tokenizer, items, max_length=max_length))
        return vectors[0] if single else vectors

    def classify(self, texts: str | Sequence[str], text_pairs: Sequence[str] | None = None) -> Any:
        """Class probabilities by label name: a dict for a string, a list of dicts for a list."""
        self._require("classify", hasattr(self.model, "classify_texts"))
        items, single = as_list(texts, "texts")
        pairs = [text_pairs] if single and isinstance(text_pairs, str) else text_pairs
        length = (self.config.get("data") or {}).get("sequence_length")
        probs = self.model.classify_texts(self.tokenizer, items, pairs, sequence_length=length)
        labels = list(self.model.labels)
        out = [{label: float(p) for label, p in zip(labels, row, strict=True)} for row in probs]
        return out[0] if single else out
