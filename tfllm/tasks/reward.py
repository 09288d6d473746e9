"""Reward modelling: a scalar score per conversation, trained on preference pairs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from tfllm import registry
from tfllm.tasks.base import TaskModel, example_means


@registry.register("task", "reward")
class RewardModel(TaskModel):
    """Scores a conversation: the backbone's hidden states pooled by a `scalar` head (the last
    real token by default). Trained on pairs with the Bradley-Terry loss
    `-log sigmoid(r(chosen) - r(rejected))`; validation reports pair accuracy (how often the
    chosen reply scores higher) and the mean margin.

    Args:
        backbone: a backbone, or its serialized config.
        head: dict. Head spec (default `{"name": "scalar", "pooling": "last_token"}`).

    Call arguments:
        token_ids: `(B, T)` int32.
        padding_mask: optional `(B, T)`.

    Returns:
        float32 scores `(B,)`.

    Example:

    >>> import numpy as np
    >>> from tfllm.models.decoder import DecoderBackbone
    >>> backbone = DecoderBackbone(vocabulary_size=50, num_layers=1, hidden_dim=16,
    ...                            num_heads=2, max_sequence_length=16)
    >>> RewardModel(backbone)(np.ones((3, 6), "int32")).shape
    TensorShape([3])

    Reference: Ouyang et al. 2022, "Training language models to follow instructions with human
    feedback".
    """

    def __init__(self, backbone: Any, head: dict[str, Any] | None = None, **kwargs):
        super().__init__(backbone, **kwargs)
        self.set_head(head, "scalar", name="reward_head")

    def call(self, token_ids, padding_mask=None, training=None):
        hidden = self.backbone(token_ids, padding_mask=padding_mask, training=training)
        return self.head(hidden, padding_mask=padding_mask, training=training)  # (B,)

    def _scores(self, batch: dict[str, Any], training: bool):
        # Both sides in one call: (2B, T).
        ids = tf.concat([batch["chosen_token_ids"], batch["rejected_token_ids"]], axis=0)
        mask = tf.concat([batch["chosen_mask"], batch["rejected_mask"]], axis=0)
        scores = self(ids, padding_mask=mask, training=training)  # (2B,)
        return tf.split(scores, 2)

    def loss_terms(self, batch: dict[str, Any], training: bool = False):
        """Summed Bradley-Terry loss of the pairs and the summed pair weights."""
        chosen, rejected = self._scores(batch, training)
        weights = tf.cast(batch["loss_weights"], tf.float32)
        loss = tf.nn.softplus(-(chosen - rejected))  # -log sigmoid(margin)
        return tf.reduce_sum(loss * weights), tf.reduce_sum(weights)

    def summarize_eval(self, loss: float, statistics: Mapping[str, Any]) -> dict[str, float]:
        return example_means(loss, statistics)

    def eval_statistics(self, batch: dict[str, Any]) -> dict[str, Any]:
        chosen, rejected = self._scores(batch, False)
        weights = tf.cast(batch["loss_weights"], tf.float32)
        return {
            "pair_accuracy": tf.reduce_sum(tf.cast(chosen > rejected, tf.float32) * weights),
            "margin": tf.reduce_sum((chosen - rejected) * weights),
            "examples": tf.reduce_sum(weights),
        }
