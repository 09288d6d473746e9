"""Extractive question answering (SQuAD): point at the answer's span in the context."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from tfllm import registry
from tfllm.tasks.base import TaskModel, example_means
from tfllm.tasks.qa_reading import (
    Answers,
    ReadingRule,
    Windows,
    best_spans,
    default_stride,
    read_windows,
    span_answers,
)
from tfllm.tasks.tagging import split_words


@registry.register("task", "extractive_qa")
class SpanExtractor(TaskModel):
    """Finds the answer to a question as a span of the context: the backbone reads
    `[CLS] question [SEP] context [SEP]`, the `span` head scores each token as the start and as
    the end, and training minimizes the mean of the two cross-entropies. Validation reports exact
    match and token-overlap F1 of the best valid span (`best_spans`) against the gold span.

    Args:
        backbone: an encoder (or decoder) backbone, or its serialized config.
        head: dict. Head spec (default `{"name": "span"}`).
        max_answer_length: int. The longest answer considered, in tokens.

    Call arguments:
        token_ids: `(B, T)` int32.
        padding_mask: optional `(B, T)`.

    Returns:
        float32 logits `(B, T, 2)` (start, end).

    Example:

    >>> import numpy as np
    >>> from tfllm.models.encoder import EncoderBackbone
    >>> backbone = EncoderBackbone(vocabulary_size=50, num_layers=1, hidden_dim=16,
    ...                            num_heads=2, max_sequence_length=16)
    >>> qa = SpanExtractor(backbone)
    >>> qa(np.ones((2, 9), "int32")).shape
    TensorShape([2, 9, 2])

    Reference: Devlin et al. 2019, section 4.2; Rajpurkar et al. 2016 (SQuAD).
    """

    def __init__(
        self,
        backbone: Any,
        head: dict[str, Any] | None = None,
        max_answer_length: int = 30,
        **kwargs,
    ):
        super().__init__(backbone, **kwargs)
        if max_answer_length < 1:
            raise ValueError(f"max_answer_length must be positive, got {max_answer_length}")
        self.max_answer_length = max_answer_length
        self.set_head(head, "span", name="span_head")

    def call(self, token_ids, padding_mask=None, training=None):
        hidden = self.backbone(token_ids, padding_mask=padding_mask, training=training)
        return self.head(hidden, padding_mask=padding_mask, training=training)  # (B, T, 2)

    def loss_terms(self, batch: dict[str, Any], training: bool = False):
        """Summed mean start/end cross-entropy of the rows and the summed row weights."""
        logits = self(batch["token_ids"], padding_mask=batch.get("padding_mask"), training=training)
        ce = 0.5 * sum(
            tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.cast(batch[key], tf.int32), logits=logits[:, :, k]
            )
            for k, key in enumerate(("start", "end"))
        )  # (B,)
        weights = tf.cast(batch["loss_weights"], ce.dtype)
        return tf.reduce_sum(ce * weights), tf.reduce_sum(weights)

    def summarize_eval(self, loss: float, statistics: Mapping[str, Any]) -> dict[str, float]:
        return example_means(loss, statistics)

    def eval_statistics(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Summed exact matches and token F1 of the predicted spans, and the example count."""
        logits = self(batch["token_ids"], padding_mask=batch.get("padding_mask"), training=False)
        start, end = best_spans(logits, batch["context_mask"], self.max_answer_length)
        gold_start = tf.cast(batch["start"], tf.int32)
        gold_end = tf.cast(batch["end"], tf.int32)
        weights = tf.cast(batch["loss_weights"], tf.float32)
        exact = tf.cast((start == gold_start) & (end == gold_end), tf.float32)
        overlap = tf.cast(
            tf.maximum(tf.minimum(end, gold_end) - tf.maximum(start, gold_start) + 1, 0),
            tf.float32,
        )
        precision = overlap / tf.cast(end - start + 1, tf.float32)
        recall = overlap / tf.cast(gold_end - gold_start + 1, tf.float32)
        f1 = tf.math.divide_no_nan(2 * precision * recall, precision + recall)
        return {
            "exact_match": tf.reduce_sum(exact * weights),
            "span_f1": tf.reduce_sum(f1 * weights),
            "examples": tf.reduce_sum(weights),
        }

    def task_config(self) -> dict[str, Any]:
        return {"max_answer_length": self.max_answer_length}

    def read(
        self,
        tokenizer,
        questions,
        contexts,
        rule: ReadingRule,
        checks: Callable[[Windows], list] | None = None,
    ) -> Answers:
        """The best answer to each question `(B,)` in its context `(B,)`, as graph ops
        (`tfllm.tasks.qa_reading`); `checks(windows)` are assertions the model waits for."""
        windows = read_windows(tokenizer, questions, contexts, rule)
        with tf.control_dependencies(checks(windows) if checks else []):
            pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
            ids = windows.ids.to_tensor(default_value=pad)  # (R, T)
        mask = tf.sequence_mask(windows.ids.row_lengths(), tf.shape(ids)[1])
        logits = self(ids, padding_mask=mask, training=False)  # (R, T, 2)
        return span_answers(logits, windows, contexts, self.max_answer_length)

    def _reader(self, tokenizer, rule: ReadingRule):
        """`read` as one traced function of any batch, kept per tokenizer and rule: later
        `answer` calls run it without tracing again."""
        readers = _READERS.setdefault(self, {})
        key = (tokenizer, rule)  # a tokenizer is equal only to itself
        if key not in readers:
            strings = tf.TensorSpec([None], tf.string)
            model = weakref.ref(self)  # the cache must not keep its own key alive
            readers[key] = tf.function(
                lambda q, c: model().read(tokenizer, q, c, rule),
                input_signature=[strings, strings],
                autograph=False,
            )
        return readers[key]

    def answer(
        self,
        tokenizer,
        questions: Sequence[str],
        contexts: Sequence[str],
        rule: ReadingRule | None = None,
        batch_size: int = 16,
    ) -> list[Answer]:
        """The best answer to each question in its context (any length: long contexts are read
        in overlapping windows), by the rule SQuAD data and exports follow.

        Raises:
            ValueError: the lists differ in length, a question or context is blank, or the rule
                reads longer rows than the model holds.
        """
        length = self.max_sequence_length
        rule = rule or ReadingRule(length, 64, default_stride(length))
        if rule.sequence_length > self.max_sequence_length:
            raise ValueError(
                f"rows of {rule.sequence_length} tokens exceed the model's "
                f"{self.max_sequence_length}"
            )
        if len(questions) != len(contexts):
            raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts")
        for what, texts in (("question", questions), ("context", contexts)):
            for text in texts:
                if not split_words(text):
                    raise ValueError(f"a {what} has no words: {text!r}")
        rule.check(tokenizer)
        read = self._reader(tokenizer, rule)
        out: list[Answer] = []
        for i in range(0, len(questions), batch_size):
            got = read(
                tf.constant(list(questions[i : i + batch_size])),
                tf.constant(list(contexts[i : i + batch_size])),
            )
            out += [
                Answer(text.decode("utf-8"), int(start), int(end), float(score))
                for text, start, end, score in zip(*(t.numpy() for t in got), strict=True)
            ]
        return out


# A model's traced readers, outside the model: a traced function set on a Keras layer would be
# tracked, and saved with it.
_READERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class Answer:
    """`SpanExtractor.answer`'s answer to one question: the span's text, its character offsets
    `[start, end)` into the context, and its score `P(start) * P(end)`."""

    text: str
    start: int
    end: int
    score: float
