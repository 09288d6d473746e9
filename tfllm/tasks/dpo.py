"""Direct preference optimization: a policy pushed toward chosen replies, against a reference."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from tfllm import registry
from tfllm.tasks.base import example_means
from tfllm.tasks.causal_lm import CausalLM
from tfllm.tasks.reference import copy_policy, frozen_reference


def sequence_log_probs(logits, labels, weights):
    """Summed log-probabilities `(B,)` of `labels` `(B, T)` under `logits` `(B, T, V)`, over
    the tokens `weights` marks."""
    token = -tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32)
    )  # (B, T)
    return tf.reduce_sum(token * tf.cast(weights, tf.float32), axis=-1)


@registry.register("task", "dpo")
class DirectPreferenceOptimization(CausalLM):
    """A causal LM (the policy) trained on preference pairs with the DPO loss

        -log sigmoid(beta * [(log pi(c) - log ref(c)) - (log pi(r) - log ref(r))])

    where `ref` is a frozen copy of the policy as training starts (`init_from=` an SFT run),
    `c`/`r` the chosen and rejected replies, and log-probabilities are summed over the reply's
    tokens only. Validation reports the implicit reward accuracy (how often the chosen reply's
    margin over the reference beats the rejected one's) and the mean margin. The model itself
    is the policy: generation and exports use it as any causal LM.

    Args:
        backbone, head: as in `CausalLM`.
        beta: float. Strength of the implicit KL penalty (0.1 in the paper).
        label_smoothing: float. Conservative DPO: the share of pairs assumed mislabelled.

    Example:

    >>> import numpy as np
    >>> from tfllm.models.decoder import DecoderBackbone
    >>> backbone = DecoderBackbone(vocabulary_size=50, num_layers=1, hidden_dim=16,
    ...                            num_heads=2, max_sequence_length=16)
    >>> dpo = DirectPreferenceOptimization(backbone, beta=0.1)
    >>> dpo(np.zeros((2, 8), "int32")).shape
    TensorShape([2, 8, 50])

    Reference: Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is
    Secretly a Reward Model".
    """

    def __init__(
        self,
        backbone: Any,
        head: dict[str, Any] | None = None,
        beta: float = 0.1,
        label_smoothing: float = 0.0,
        **kwargs,
    ):
        super().__init__(backbone, head=head, **kwargs)
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
        self.beta = beta
        self.label_smoothing = label_smoothing
        self.reference = frozen_reference(self)

    def on_initialized(self) -> None:
        """Make the reference a copy of the policy's current weights (called by the trainer
        after `init_from`, before any step)."""
        copy_policy(self, self.reference)

    def _side_log_probs(self, model, batch, side, training):
        logits = model(
            batch[f"{side}_token_ids"], padding_mask=batch[f"{side}_mask"], training=training
        )  # (B, T, V)
        return sequence_log_probs(logits, batch[f"{side}_labels"], batch[f"{side}_weights"])

    def _margins(self, batch: dict[str, Any], training: bool):
        policy_c = self._side_log_probs(self, batch, "chosen", training)
        policy_r = self._side_log_probs(self, batch, "rejected", training)
        ref_c = tf.stop_gradient(self._side_log_probs(self.reference, batch, "chosen", False))
        ref_r = tf.stop_gradient(self._side_log_probs(self.reference, batch, "rejected", False))
        return policy_c - ref_c, policy_r - ref_r  # (B,) each: the implicit rewards / beta

    def loss_terms(self, batch: dict[str, Any], training: bool = False):
        """Summed DPO loss of the pairs and the summed pair weights."""
        chosen, rejected = self._margins(batch, training)
        z = self.beta * (chosen - rejected)
        eps = self.label_smoothing
        loss = (1 - eps) * tf.nn.softplus(-z) + eps * tf.nn.softplus(z)
        weights = tf.cast(batch["loss_weights"], tf.float32)
        return tf.reduce_sum(loss * weights), tf.reduce_sum(weights)

    def loss_normalizer(self, batch: dict[str, Any]):
        return tf.reduce_sum(tf.cast(batch["loss_weights"], tf.float32))

    def summarize_eval(self, loss: float, statistics: Mapping[str, Any]) -> dict[str, float]:
        return example_means(loss, statistics)

    def eval_statistics(self, batch: dict[str, Any]) -> dict[str, Any]:
        chosen, rejected = self._margins(batch, False)
        weights = tf.cast(batch["loss_weights"], tf.float32)
        return {
            "reward_accuracy": tf.reduce_sum(tf.cast(chosen > rejected, tf.float32) * weights),
            "reward_margin": tf.reduce_sum(self.beta * (chosen - rejected) * weights),
            "examples": tf.reduce_sum(weights),
        }

    def task_config(self) -> dict[str, Any]:
        return {
            **super().task_config(),
            "beta": self.beta,
            "label_smoothing": self.label_smoothing,
        }
