"""One transformer block: attention and feed-forward sub-layers with residuals and norms."""

from __future__ import annotations

from typing import Any

import keras

from tfllm import registry
from tfllm.components.attention.base import Attention
from tfllm.registry import ConfigError

NORM_PLACEMENTS = ("pre", "post")


@keras.saving.register_keras_serializable(package="tfllm")
class TransformerBlock(keras.layers.Layer):
    """`x + attn(norm(x))`, then `x + ffn(norm(x))` (pre-norm), or norms after (post-norm).

    Every sub-layer comes from the registry: `attention`, `ffn` and `norm` are specs
    (`{"name": ..., **args}`); the block offers them `hidden_dim`, `num_heads`,
    `intermediate_dim` and `causal`, which each takes if its constructor names them.

    With a `cross_attention` spec (an encoder-decoder's decoder) a third sub-layer sits between
    the two: `x + cross(norm(x), context)`, attending to the encoder's states. It is built with
    `cross=True`, so the attention class must support it (`mha` does).

    Args:
        hidden_dim: int. Model width.
        num_heads: int. Query heads.
        intermediate_dim: int. FFN inner width.
        attention: dict. Attention spec.
        ffn: dict. FFN spec.
        norm: dict. Norm spec.
        norm_placement: str. `pre` (GPT-2, Llama) or `post` (original Transformer, BERT).
        dropout: float. Residual dropout after each sub-layer.
        causal: bool. Decoder (True) or encoder (False) masking.
        initializer_range: float. Standard deviation of the normal initializers.
        output_initializer_range: float or None. Offered to sub-layers for the projections that
            write into the residual stream.
        cross_attention: dict or None. Cross-attention spec, for decoder blocks that read an
            encoder.

    Call arguments:
        x: `(B, T, hidden_dim)`.
        positions, padding_mask, cache, cache_index, positional, training: as in attention.
        context, context_kv, context_mask: the encoder's states (or their projection) and
            padding mask, for the cross-attention sub-layer.
        value_embedding: optional `(B, T, num_kv_heads * head_dim)`, passed to an attention
            that `supports_value_embeddings`.

    Example:

    >>> import numpy as np
    >>> block = TransformerBlock(16, 4, 64, {"name": "mha"}, {"name": "mlp"},
    ...                          {"name": "layernorm"})
    >>> block(np.ones((2, 5, 16), "float32")).shape
    TensorShape([2, 5, 16])
    """

    def __init__(
        self,
        hidden_dim: int,
        num_heads: int,
        intermediate_dim: int,
        attention: dict[str, Any],
        ffn: dict[str, Any],
        norm: dict[str, Any],
        norm_placement: str = "pre",
        dropout: float = 0.0,
        causal: bool = True,
        initializer_range: float = 0.02,
        output_initializer_range: float | None = None,
        cross_attention: dict[str, Any] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if norm_placement not in NORM_PLACEMENTS:
            raise ValueError(
                f"norm_placement must be one of {NORM_PLACEMENTS}, got '{norm_placement}'"
            )
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.attention_spec = dict(attention)
        self.ffn_spec = dict(ffn)
        self.norm_spec = dict(norm)
        self.norm_placement = norm_placement
        self.dropout = dropout
        self.causal = causal
        self.initializer_range = initializer_range
        self.output_initializer_range = output_initializer_range
        context = dict(
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            intermediate_dim=intermediate_dim,
            causal=causal,
            initializer_range=initializer_range,
            output_initializer_range=output_initializer_range,
        )
        dtype = self.dtype_policy
        self.attention = registry.build(
            "attention", attention, context, dtype=dtype, name="attention"
        )
        self.ffn = registry.build("ffn", ffn, context, dtype=dtype, name="ffn")
        self.attention_norm = registry.build(
            "norm", norm, context, dtype=dtype, name="attention_norm"
        )
        self.ffn_norm = registry.build("norm", norm, context, dtype=dtype, name="ffn_norm")
        self.residual_dropout = keras.layers.Dropout(dropout, dtype=dtype)
        self.cross_attention_spec = None if cross_attention is None else dict(cross_attention)
        if cross_attention is not None:
            entry = registry.get("attention", cross_attention["name"])
            if not (isinstance(entry, type) and issubclass(entry, Attention)) or (
                not entry.supports_cross
            ):
                raise ConfigError(
                    f"cross_attention: attention '{cross_attention['name']}' cannot attend to an "
                    "encoder's states (it does not declare supports_cross); use mha"
                )
            self.cross_attention = registry.build(
                "attention",
                cross_attention,
                {**context, "causal": False, "cross": True},
                key="cross_attention",
                dtype=dtype,
                name="cross_attention",
            )
            self.cross_norm = registry.build("norm", norm, context, dtype=dtype, name="cross_norm")

    def _sublayers(self) -> list[keras.layers.Layer]:
        layers = [self.attention, self.ffn, self.attention_norm, self.ffn_norm]
        if self.cross_attention_spec is not None:
            layers += [self.cross_attention, self.cross_norm]
        return layers

    def build(self, input_shape):
        for layer in self._sublayers():
            layer.build(input_shape)
        self.built = True

    def call(
        self,
        x,
        positions=None,
        padding_mask=None,
        cache=None,
        cache_index=None,
        positional=None,
        context=None,
        context_kv=None,
        context_mask=None,
        training=None,
        value_embedding=None,
    ):
        pre = self.norm_placement == "pre"
        h = self.attention_norm(x) if pre else x  # (B, T, D)
        extra = {} if value_embedding is None else {"value_embedding": value_embedding}
        attn = self.attention(
            h,
            positions=positions,
            padding_mask=padding_mask,
            cache=cache,
            cache_index=cache_index,
            positional=positional,
            training=training,
            **extra,
        )
        if cache is not None:
            attn, cache = attn
        x = x + self.residual_dropout(attn, training=training)  # (B, T, D)
        if not pre:
            x = self.attention_norm(x)
        if self.cross_attention_spec is not None:
            h = self.cross_norm(x) if pre else x
            cross = self.cross_attention(
                h,
                context=context,
                context_kv=context_kv,
                context_mask=context_mask,
                training=training,
            )  # (B, T, D)
            x = x + self.residual_dropout(cross, training=training)
            if not pre:
                x = self.cross_norm(x)
        h = self.ffn_norm(x) if pre else x
        x = x + self.residual_dropout(self.ffn(h), training=training)  # (B, T, D)
        if not pre:
            x = self.ffn_norm(x)
        if cache is not None:
            return x, cache
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim,
            attention=self.attention_spec,
            ffn=self.ffn_spec,
            norm=self.norm_spec,
            norm_placement=self.norm_placement,
            dropout=self.dropout,
            causal=self.causal,
            initializer_range=self.initializer_range,
            output_initializer_range=self.output_initializer_range,
            cross_attention=self.cross_attention_spec,
        )
        return config
