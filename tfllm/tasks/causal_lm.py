"""Causal language modelling: predict every next token."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfllm import registry
from tfllm.tasks.base import TaskModel


@registry.register("task", "causal_lm")
class CausalLM(TaskModel):
    """A decoder backbone with an LM head, trained on next-token cross-entropy.

    Args:
        backbone: a decoder backbone (e.g. `DecoderBackbone`), or its serialized config.
        head: dict. Head spec; the head is offered `vocabulary_size` from the backbone.

    Call arguments:
        token_ids: `(B, T)` int32.
        padding_mask: optional `(B, T)`.

    Returns:
        float32 logits `(B, T, vocabulary_size)`.

    Example:

    >>> import numpy as np
    >>> from tfllm.models.decoder import DecoderBackbone
    >>> backbone = DecoderBackbone(vocabulary_size=50, num_layers=1, hidden_dim=16,
    ...                            num_heads=2, max_sequence_length=16)
    >>> lm = CausalLM(backbone)
    >>> lm(np.zeros((2, 8), "int32")).shape
    TensorShape([2, 8, 50])
    """

    def __init__(self, backbone: Any, head: dict[str, Any] | None = None, **kwargs):
        super().__init__(backbone, **kwargs)
        if hasattr(self.backbone, "encode"):
            raise ValueError(
                "causal_lm needs a decoder-only backbone; an encoder-decoder (t5 presets, "
                "model=encoder_decoder) trains with task=seq2seq or task=span_corruption"
            )
        self.set_head(head, "lm", {"vocabulary_size": self.vocabulary_size}, "lm_head")

    def call(self, token_ids, padding_mask=None, training=None):
        hidden = self.backbone(token_ids, padding_mask=padding_mask, training=training)
        return self.head(hidden, token_embedding=self.backbone.token_embedding)  # (B, T, V)

    def call_with_cache(self, token_ids, cache, cache_index, logits_at=None):
        """Logits `(B, T, V)` for `token_ids` `(B, T)` placed at `cache_index`, and the
        updated cache. With `logits_at` (an int32 scalar index into `T`) only that position's
        logits `(B, 1, V)`: a prefill needs the last prompt token's, and the head over every
        prompt position would cost as much as a quarter of a 64-token prefill."""
        hidden, cache = self.backbone(token_ids, cache=cache, cache_index=cache_index)
        if logits_at is not None:
            hidden = tf.gather(hidden, [logits_at], axis=1)  # (B, 1, D)
        logits = self.head(hidden, token_embedding=self.backbone.token_embedding)
        return logits, cache

    def init_cache(self, batch_size, max_length):
        return self.backbone.init_cache(batch_size, max_length)

    def loss_terms(self, batch: dict[str, Any], training: bool = False):
        """Summed token cross-entropy and the summed token weights for one batch.

        `batch` holds `token_ids` `(B, T)`, `labels` `(B, T)` and optionally `loss_weights`
        (zero for tokens that carry no loss) and `padding_mask`.
        """
        logits = self(
            batch["token_ids"], padding_mask=batch.get("padding_mask"), training=training
        )  # (B, T, V)
        labels = tf.cast(batch["labels"], tf.int32)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        weights = batch.get("loss_weights")
        weights = tf.ones_like(ce) if weights is None else tf.cast(weights, ce.dtype)
        return tf.reduce_sum(ce * weights), tf.reduce_sum(weights)


@registry.register("task", "sft")
class SupervisedFineTuning(CausalLM):
    """Supervised fine-tuning: a causal LM trained on chat-templated conversations (`data=chat`)
    whose batches weight only the assistant's tokens, so prompts carry no loss. The model is a
    plain `CausalLM`; `init_from=` a run or an imported checkpoint brings its weights, and the
    run keeps the chat template for `tfllm chat`.

    Example:

    >>> import numpy as np
    >>> from tfllm.models.decoder import DecoderBackbone
    >>> backbone = DecoderBackbone(vocabulary_size=50, num_layers=1, hidden_dim=16,
    ...                            num_heads=2, max_sequence_length=16)
    >>> SupervisedFineTuning(backbone)(np.zeros((2, 8), "int32")).shape
    TensorShape([2, 8, 50])
    """
