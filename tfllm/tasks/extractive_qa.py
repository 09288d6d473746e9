"""Extractive question answering (SQuAD): point at the answer's span in the context."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from tfllm import registry
from tfllm.tasks.base import TaskModel, example_means


def best_spans(logits, context_mask, max_answer_length: int):
    """The highest-scoring `(start, end)` per row with `start <= end < start + max_answer_length`,
    both inside the context.

    Args:
        logits: `(B, T, 2)` start and end logits.
        context_mask: `(B, T)`, true for context tokens (where answers may lie).

    Returns:
        `(starts (B,), ends (B,))` int32.
    """
    t = tf.shape(logits)[1]
    scores = logits[:, :, 0][:, :, None] + logits[:, :, 1][:, None, :]  # (B, T_start, T_end)
    i = tf.range(t)[:, None]
    j = tf.range(t)[None, :]
    valid = (j >= i) & (j - i < max_answer_length)  # (T, T)
    inside = tf.cast(context_mask, tf.bool)
    valid = valid[None] & inside[:, :, None] & inside[:, None, :]  # (B, T, T)
    scores = tf.where(valid, scores, -1e30)
    flat = tf.argmax(tf.reshape(scores, [tf.shape(logits)[0], -1]), axis=-1, output_type=tf.int32)
    return flat // t, flat % t


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
