"""Classification by label likelihood: zero-shot, few-shot and chain-of-thought prompting.

A causal LM classifies a text by the log-likelihood it gives each label's verbalizer after a
prompt, not by parsing free text: the prediction is always one of the labels, and the scores are
comparable across labels.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from tfllm import progress
from tfllm.data.tsv import LabelledText, read_labelled_tsv
from tfllm.registry import ConfigError
from tfllm.tasks.classifier import confusion_metrics

__all__ = ["LabelledText", "read_labelled_tsv"]  # re-exported: they moved to tfllm.data.tsv

# Queries without content, whose label scores show the prompt's own bias (Zhao et al. 2021).
CONTENT_FREE = ("N/A", "", "[MASK]")


def draw_demonstrations(
    pool: Sequence[LabelledText], shots: int, labels: Sequence[str], seed: int, balanced: bool
) -> list[LabelledText]:
    """`shots` demonstrations from `pool`, seeded; balanced ones cycle through the labels."""
    rng = random.Random(seed)
    pool = list(pool)
    rng.shuffle(pool)
    if not balanced:
        return pool[:shots]
    by_label = {label: [d for d in pool if d.label == label] for label in labels}
    order = [label for label in labels if by_label[label]]
    rng.shuffle(order)
    drawn: list[LabelledText] = []
    while len(drawn) < shots and any(by_label[label] for label in order):
        for label in order:
            if by_label[label] and len(drawn) < shots:
                drawn.append(by_label[label].pop())
    rng.shuffle(drawn)
    return drawn


@dataclass
class ClassificationReport:
    """Accuracy, macro-F1 and the confusion matrix of label predictions.

    Attributes:
        labels: the label names, in matrix order.
        confusion: `confusion[i][j]` counts examples of label i predicted as j.
        shots: demonstrations in each prompt.
    """

    labels: list[str]
    confusion: list[list[int]]
    shots: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return int(np.sum(self.confusion))

    @property
    def accuracy(self) -> float:
        return confusion_metrics(self.confusion)[0]

    @property
    def macro_f1(self) -> float:
        return confusion_metrics(self.confusion)[1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "examples": self.total,
            "shots": self.shots,
            "labels": self.labels,
            "confusion": self.confusion,
            **self.extra,
        }


class LabelLikelihoodClassifier:
    """Classifies texts with a causal LM by the log-likelihood of each label's verbalizer.

    The prompt is `shots` demonstrations (drawn with `seed` from `demonstrations`, each the
    template filled with its text followed by its verbalizer), joined by `separator`, then the
    template filled with the query. Each label is scored by the summed log-probability of its
    verbalizer tokens after the prompt (`normalize=True` divides by their count).

    With `chain_of_thought`, the model first writes up to `reasoning_tokens` tokens after the
    prompt and the cue (greedy), and labels are scored after the reasoning and `answer_cue`.

    Args:
        model: a causal LM (`(B, T)` ids to `(B, T, V)` logits).
        tokenizer: its tokenizer.
        verbalizers: label -> the text that stands for it, e.g. `{"1": " positive"}`.
        template: the prompt for one text, with `{text}`.
        shots: demonstrations per prompt.
        demonstrations: labelled examples to draw them from.
        separator: between demonstrations and the query.
        seed: the draw of demonstrations.
        normalize: average rather than sum the verbalizer log-probabilities.
        chain_of_thought: the reasoning cue (e.g. `" Let's think step by step."`), or None.
        answer_cue: after the reasoning, before the label.
        reasoning_tokens: the longest reasoning.
        batch_size: sequences per forward pass.
        balanced: draw demonstrations evenly across labels (in a shuffled order); otherwise
            uniformly. A prompt whose demonstrations mostly share one label pulls predictions
            towards it (Zhao et al. 2021, "Calibrate Before Use").

    Example:

    >>> clf = LabelLikelihoodClassifier(lm, tokenizer, {"0": " negative", "1": " positive"},
    ...                                 template="Review: {text}\\nSentiment:")  # doctest: +SKIP
    >>> clf.predict(["a wonderful film"])  # doctest: +SKIP
    ['1']
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        verbalizers: Mapping[str, str],
        template: str = "{text}",
        shots: int = 0,
        demonstrations: Sequence[LabelledText] = (),
        separator: str = "\n\n",
        seed: int = 0,
        normalize: bool = False,
        chain_of_thought: str | None = None,
        answer_cue: str = "\nSo the answer is",
        reasoning_tokens: int = 48,
        batch_size: int = 8,
        balanced: bool = True,
    ):
        if len(verbalizers) < 2:
            raise ConfigError("verbalizers: at least two labels are needed to classify")
        if "{text}" not in template:
            raise ConfigError(f"template: '{template}' has no {{text}} placeholder")
        if shots < 0:
            raise ConfigError(f"shots must be >= 0, got {shots}")
        if shots and len(demonstrations) < shots:
            raise ConfigError(
                f"shots={shots} but only {len(demonstrations)} demonstrations were given"
            )
        unknown = sorted({d.label for d in demonstrations} - set(verbalizers))
        if unknown:
            raise ConfigError(f"demonstrations use labels {unknown} that have no verbalizer")
        self.model = model
        self.tokenizer = tokenizer
        self.verbalizers = dict(verbalizers)
        self.labels = list(verbalizers)
        self.template = template
        self.shots = shots
        self.separator = separator
        self.normalize = normalize
        self.chain_of_thought = chain_of_thought
        self.answer_cue = answer_cue
        self.reasoning_tokens = reasoning_tokens
        self.batch_size = batch_size
        self.context = self.max_context()
        self.demonstrations = draw_demonstrations(
            demonstrations, shots, self.labels, seed, balanced
        )
        self._label_ids = {
            label: tokenizer.encode_one(text) for label, text in self.verbalizers.items()
        }
        empty = [label for label, ids in self._label_ids.items() if not ids]
        if empty:
            raise ConfigError(f"verbalizers: {empty} encode to no tokens")
        self._forward = tf.function(
            lambda x: model(x, training=False), reduce_retracing=True, autograph=False
        )

    def max_context(self) -> int:
        return int(self.model.backbone.max_sequence_length)

    def prompt(self, text: str) -> str:
        """The prompt for one query text (demonstrations included)."""
        parts = [
            self.template.format(text=d.text) + self.verbalizers[d.label]
            for d in self.demonstrations
        ]
        parts.append(self.template.format(text=text))
        return self.separator.join(parts)

    def _prompt_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        bos = self.tokenizer.prompt_bos_id
        out = []
        for p in prompts:
            ids = ([bos] if bos is not None else []) + self.tokenizer.encode_one(p)
            out.append(ids)
        return out

    def _reason(self, prompt_ids: list[list[int]]) -> list[list[int]]:
        from tfllm.generation.decoder import GenerationConfig, Generator

        cue = self.tokenizer.encode_one(self.chain_of_thought or "")
        answer = self.tokenizer.encode_one(self.answer_cue)
        generator = Generator(self.model, self.tokenizer)
        config = GenerationConfig(max_new_tokens=self.reasoning_tokens, temperature=0.0)
        out = []
        for ids in prompt_ids:
            buffer, lengths, total = generator.generate_ids([ids + cue], config)
            out.append(buffer[0, : total[0]].tolist() + answer)
        return out

    def label_log_likelihoods(self, texts: Sequence[str]) -> np.ndarray:
        """`(len(texts), len(labels))` log-likelihoods of each label's verbalizer."""
        prompt_ids = self._prompt_ids([self.prompt(t) for t in texts])
        if self.chain_of_thought is not None:
            prompt_ids = self._reason(prompt_ids)
        rows: list[tuple[int, int, list[int], int]] = []  # (example, label, ids, prompt length)
        for i, ids in enumerate(prompt_ids):
            for j, label in enumerate(self.labels):
                seq = ids + self._label_ids[label]
                if len(seq) > self.context:
                    raise ConfigError(
                        f"a prompt with its label is {len(seq)} tokens, longer than the model's "
                        f"context of {self.context}: use fewer shots or a shorter template"
                    )
                rows.append((i, j, seq, len(ids)))
        scores = np.zeros((len(texts), len(self.labels)))
        starts = range(0, len(rows), self.batch_size)
        for start in progress.tracked(starts, "scoring labels", unit="batch"):
            chunk = rows[start : start + self.batch_size]
            width = max(len(seq) for _, _, seq, _ in chunk)
            batch = np.zeros((len(chunk), width), np.int32)
            for r, (_, _, seq, _) in enumerate(chunk):
                batch[r, : len(seq)] = seq
            logits = self._forward(tf.constant(batch))
            log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32)).numpy()
            for r, (i, j, seq, n_prompt) in enumerate(chunk):
                positions = np.arange(n_prompt, len(seq))
                lp = log_probs[r, positions - 1, batch[r, positions]].astype(np.float64)
                scores[i, j] = lp.mean() if self.normalize else lp.sum()
        return scores

    def predict(self, texts: Sequence[str]) -> list[str]:
        scores = self.label_log_likelihoods(texts)
        return [self.labels[k] for k in np.argmax(scores, axis=1)]

    def content_free_log_priors(self) -> np.ndarray:
        """`log p_cf(label)`: the label distribution the prompt alone induces, averaged over
        content-free queries (Zhao et al. 2021, contextual calibration)."""
        scores = self.label_log_likelihoods(CONTENT_FREE)  # (3, labels)
        probs = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        return np.log(probs.mean(axis=0))

    def evaluate(
        self, examples: Sequence[LabelledText], calibrate: bool = False
    ) -> ClassificationReport | tuple[ClassificationReport, ClassificationReport]:
        """Predict every example and count the confusion matrix. With `calibrate`, also return
        the report of contextually calibrated predictions (label log-probabilities minus the
        prompt's content-free log-prior), from the same forward passes."""
        unknown = sorted({e.label for e in examples} - set(self.labels))
        if unknown:
            raise ConfigError(f"examples use labels {unknown} that have no verbalizer")
        scores = self.label_log_likelihoods([e.text for e in examples])
        gold = [self.labels.index(e.label) for e in examples]
        report = self._report(gold, np.argmax(scores, axis=1))
        if not calibrate:
            return report
        normalized = scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)
        calibrated = normalized - self.content_free_log_priors()[None, :]
        return report, self._report(gold, np.argmax(calibrated, axis=1))

    def _report(self, gold: Sequence[int], predicted: Sequence[int]) -> ClassificationReport:
        confusion = [[0] * len(self.labels) for _ in self.labels]
        for g, p in zip(gold, predicted, strict=True):
            confusion[g][int(p)] += 1
        return ClassificationReport(self.labels, confusion, self.shots)
