"""A safety filter that asks a language model to classify each text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tfllm.components.safety.base import SafetyFilter, Verdict
from tfllm.registry import register


@register("safety_filter", "classifier")
class ClassifierFilter(SafetyFilter):
    """Flags texts that a causal LM, prompted as a classifier, judges unsafe.

    The judge scores each label's verbalizer after `template` by log-likelihood (see
    `tfllm.evaluation.classification`); the probability of `unsafe_label`, normalized over the
    labels, above `threshold` flags the text. The judge is any tfllm run or converted checkpoint
    (for example an instruction-tuned model, or one fine-tuned on labelled unsafe text). Runs in
    Python (generation, chat); exports use graph-capable filters such as `patterns`.

    Args:
        ckpt: the judge's run directory (or pass `model` and `tokenizer`).
        template: the prompt, with `{text}`.
        verbalizers: label -> its text after the prompt.
        unsafe_label: the label that means unsafe.
        threshold: the probability above which a text is flagged.
        action, message: see `SafetyFilter`.
        model, tokenizer: an already loaded judge (instead of `ckpt`).

    Example:

    >>> f = ClassifierFilter(ckpt="runs/judge")  # doctest: +SKIP
    >>> f.verdicts(["some text"])[0].flagged  # doctest: +SKIP
    False
    """

    def __init__(
        self,
        ckpt: str | None = None,
        template: str = "Is the following text harmful, hateful or dangerous?\nText: {text}\n"
        "Answer:",
        verbalizers: Mapping[str, str] | None = None,
        unsafe_label: str = "unsafe",
        threshold: float = 0.5,
        action: str = "flag",
        message: str = "[withheld by the safety filter]",
        model: Any = None,
        tokenizer: Any = None,
    ):
        super().__init__(action=action, message=message)
        from tfllm.evaluation.classification import LabelLikelihoodClassifier

        verbalizers = dict(verbalizers or {"safe": " No", "unsafe": " Yes"})
        if unsafe_label not in verbalizers:
            raise ValueError(
                f"unsafe_label '{unsafe_label}' is not one of the verbalizers {list(verbalizers)}"
            )
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if model is None:
            if not ckpt:
                raise ValueError("a classifier filter needs ckpt= (or model and tokenizer)")
            from tfllm.runs import load_run

            model, tokenizer, _ = load_run(ckpt)
        self.ckpt = ckpt
        self.unsafe_label = unsafe_label
        self.threshold = threshold
        self.classifier = LabelLikelihoodClassifier(model, tokenizer, verbalizers, template)
        self._unsafe = list(verbalizers).index(unsafe_label)

    def unsafe_probabilities(self, texts: Sequence[str]) -> np.ndarray:
        scores = self.classifier.label_log_likelihoods(texts)  # (B, labels)
        probs = np.exp(scores - scores.max(axis=1, keepdims=True))
        return (probs / probs.sum(axis=1, keepdims=True))[:, self._unsafe]

    def verdicts(self, texts: Sequence[str]) -> list[Verdict]:
        out = []
        for text, p in zip(texts, self.unsafe_probabilities(texts), strict=True):
            if p <= self.threshold:
                out.append(Verdict(False, (), text))
                continue
            reason = (f"{self.unsafe_label} p={p:.2f}",)
            out.append(Verdict(True, reason, self.message if self.action != "flag" else text))
        return out
