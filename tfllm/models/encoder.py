"""The encoder-only backbone (BERT, MiniLM): bidirectional blocks over token embeddings."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfllm import registry
from tfllm.models.decoder import DecoderBackbone


@registry.register("model", "encoder")
class EncoderBackbone(DecoderBackbone):
    """A stack of bidirectional transformer blocks; returns one hidden state per token.

    The same registry parts as the decoder (any positional encoding, attention, FFN or norm)
    with causal masking off. BERT-style models add segment (token type) embeddings and a norm
    over the summed embeddings before the first block; both are options.

    Args:
        vocabulary_size, num_layers, hidden_dim, num_heads, intermediate_dim,
            max_sequence_length, dropout, norm_placement, attention, positional, ffn, norm,
            initializer_range, scaled_residual_init, zero_residual_init, unet_skips,
            value_embeddings: as in `DecoderBackbone` (but post-norm by default, as in BERT).
        type_vocabulary_size: int. Number of segment ids (2 in BERT; 0 for none).
        embedding_norm: bool. Normalize the summed embeddings (with the `norm` spec) before
            the first block, as BERT does.

    Call arguments:
        token_ids: `(B, T)` int32.
        padding_mask: optional `(B, T)`, true for real tokens; padded keys get no attention.
        segment_ids: optional `(B, T)` int32 segment ids (zeros if omitted).

    Returns:
        Hidden states `(B, T, hidden_dim)`.

    Example:

    >>> import numpy as np
    >>> model = EncoderBackbone(vocabulary_size=50, num_layers=2, hidden_dim=16, num_heads=4,
    ...                         max_sequence_length=32, type_vocabulary_size=2,
    ...                         embedding_norm=True, norm_placement="post")
    >>> model(np.zeros((2, 8), "int32")).shape
    TensorShape([2, 8, 16])

    Reference: Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers".
    """

    causal = False

    def __init__(
        self,
        vocabulary_size: int,
        num_layers: int,
        hidden_dim: int,
        num_heads: int,
        intermediate_dim: int | None = None,
        max_sequence_length: int = 512,
        dropout: float = 0.0,
        norm_placement: str = "post",
        attention: dict[str, Any] | None = None,
        positional: dict[str, Any] | None = None,
        ffn: dict[str, Any] | None = None,
        norm: dict[str, Any] | None = None,
        initializer_range: float = 0.02,
        scaled_residual_init: bool = False,
        zero_residual_init: bool = False,
        unet_skips: bool = False,
        value_embeddings: int = 0,
        type_vocabulary_size: int = 0,
        embedding_norm: bool = False,
        **kwargs: Any,
    ):
        if not isinstance(type_vocabulary_size, int) or type_vocabulary_size < 0:
            raise ValueError(
                f"type_vocabulary_size must be a non-negative integer, got {type_vocabulary_size!r}"
            )
        # Set before the parent constructor, which builds (and so needs them).
        self.type_vocabulary_size = type_vocabulary_size
        self.embedding_norm = embedding_norm
        super().__init__(
            vocabulary_size=vocabulary_size,
            num_layers=num_layers,
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            intermediate_dim=intermediate_dim,
            max_sequence_length=max_sequence_length,
            dropout=dropout,
            norm_placement=norm_placement,
            attention=attention,
            positional=positional,
            ffn=ffn,
            norm=norm,
            initializer_range=initializer_range,
            scaled_residual_init=scaled_residual_init,
            zero_residual_init=zero_residual_init,
            unet_skips=unet_skips,
            value_embeddings=value_embeddings,
            **kwargs,
        )

    def build(self, input_shape):
        dtype = self.dtype_policy
        if self.type_vocabulary_size and not hasattr(self, "segment_embedding"):
            self.segment_embedding = keras.layers.Embedding(
                self.type_vocabulary_size,
                self.hidden_dim,
                embeddings_initializer=keras.initializers.RandomNormal(
                    stddev=self.initializer_range
                ),
                dtype=dtype,
                name="segment_embedding",
            )
            self.segment_embedding.build(input_shape)
        if self.embedding_norm and not hasattr(self, "embedding_layer_norm"):
            self.embedding_layer_norm = registry.build(
                "norm",
                self.norm_spec,
                {"hidden_dim": self.hidden_dim},
                dtype=dtype,
                name="embedding_norm",
            )
            self.embedding_layer_norm.build((None, None, self.hidden_dim))
        super().build(input_shape)

    def embed_tokens(self, token_ids, positions, segment_ids=None):
        x = super().embed_tokens(token_ids, positions)  # (B, T, D)
        if self.type_vocabulary_size:
            if segment_ids is None:
                segment_ids = tf.zeros_like(token_ids)
            x = x + self.segment_embedding(segment_ids)  # (B, T, D)
        if self.embedding_norm:
            x = self.embedding_layer_norm(x)
        return x

    def call(self, token_ids, padding_mask=None, segment_ids=None, training=None):
        positions = tf.range(tf.shape(token_ids)[1])  # (T,)
        x = self.embed_tokens(token_ids, positions, segment_ids)  # (B, T, D)
        x = self.embedding_dropout(x, training=training)
        skips: list = []
        values = self._values_in(token_ids)
        for i, block in enumerate(self.blocks):
            x = self._skip_in(i, x, skips)  # (B, T, D)
            x = block(
                x,
                positions=positions,
                padding_mask=padding_mask,
                positional=self.positional,
                training=training,
                value_embedding=values[i],
            )  # (B, T, D)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x

    def init_cache(self, batch_size, max_length):
        raise NotImplementedError("an encoder attends both ways: there is no decode cache")

    def get_config(self):
        config = super().get_config()
        config.update(
            type_vocabulary_size=self.type_vocabulary_size, embedding_norm=self.embedding_norm
        )
        return config
