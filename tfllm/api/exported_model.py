"""An export (a SavedModel version folder) in Python, with the methods of `KerasModel`: its
signatures are called in this process, as TF Serving would call them."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from tfllm.api.answers import as_list, shaped
from tfllm.serving.client import Completion
from tfllm.serving.in_process import InProcessExport


class ExportedModel:
    """The signatures of an export, called with plain Python values.

    Args:
        path: an export's version folder (`exports/lm/1`).

    Example:

    >>> import tfllm
    >>> served = tfllm.load("serving/models/lm")  # doctest: +SKIP
    >>> served.generate("ROMEO:")  # doctest: +SKIP
    """

    def __init__(self, path: str):
        from tfllm.runs import load_run_config

        self.path = path
        self.export = InProcessExport(path)
        self.signatures = self.export.signature_names()
        extra = os.path.join(path, "assets.extra")
        self.config = load_run_config(extra) if os.path.isdir(extra) else {}

    @property
    def task(self) -> str:
        return str((self.config.get("task") or {}).get("name", "unknown"))

    def __repr__(self) -> str:
        names = sorted(self.signatures)
        return f"ExportedModel(task={self.task!r}, signatures={names}, path={self.path!r})"

    def _call(self, signature: str, **inputs: Any) -> dict[str, np.ndarray]:
        if signature not in self.signatures:
            raise TypeError(
                f"this {self.task} export has no '{signature}' signature; it has "
                f"{sorted(self.signatures)}"
            )
        return self.export.predict(inputs, signature)

    def complete(
        self,
        prompts: str | Sequence[str],
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> Any:
        """Completions with finish reasons: `serving_default` (the export's settings) when no
        setting is given, else `generate` (unset ones greedy; `max_new_tokens` the export's)."""
        texts, single = as_list(prompts, "prompts")
        found = self.export.complete(texts, max_new_tokens, temperature, top_k, top_p, seed)
        return shaped([[c] for c in found], single, 1)

    def generate(self, prompts: str | Sequence[str], **settings: Any) -> Any:
        """Completion texts: a string for a string, a list for a list (`complete`'s settings)."""
        found = self.complete(prompts, **settings)
        return found.text if isinstance(found, Completion) else [c.text for c in found]

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        """How many ids the export reads for each prompt (its `count_tokens` signature)."""
        return self.export.count_tokens(prompts)

    def stream(self, prompt: str, **settings: Any) -> Iterator[tuple[str, str | None]]:
        """One completion in pieces as it is decoded, as `tfllm.serving.Client.stream` gets
        it from a server: `(text, None)` items, then `(the last text, finish reason)`."""
        return self.export.stream(prompt, **settings)

    def score(self, texts: str | Sequence[str], targets: Sequence[str] | None = None) -> Any:
        """Log-likelihoods from the `score` signature (an encoder-decoder's takes targets)."""
        items, single = as_list(texts, "texts")
        if targets is not None:
            out = self._call("score", sources=items, targets=list(targets))
        else:
            out = self._call("score", texts=items)
        values = np.asarray(out["log_likelihood"], np.float64)
        return float(values[0]) if single else values

    def embed(self, texts: str | Sequence[str]) -> np.ndarray:
        """Sentence embeddings from the `embed` signature: `(D,)` or `(N, D)`."""
        items, single = as_list(texts, "texts")
        vectors = np.asarray(self._call("embed", texts=items)["embeddings"], np.float32)
        return vectors[0] if single else vectors

    def classify(self, texts: str | Sequence[str], text_pairs: Sequence[str] | None = None) -> Any:
        """Class probabilities by label from a classifier export's `serving_default`."""
        items, single = as_list(texts, "texts")
        inputs: dict[str, Any] = {"texts": items}
        if text_pairs is not None:
            inputs["text_pairs"] = [text_pairs] if isinstance(text_pairs, str) else list(text_pairs)
        out = self._call("serving_default", **inputs)
        labels = list((self.config.get("task") or {}).get("labels") or [])
        if "probabilities" not in out:
            raise TypeError(f"this {self.task} export does not classify")
        labels = labels or [str(i) for i in range(out["probabilities"].shape[1])]
        rows = [
            {label: float(p) for label, p in zip(labels, row, strict=True)}
            for row in out["probabilities"]
        ]
        return rows[0] if single else rows
