"""The decoder-only backbone (GPT, Llama): embeddings, causal blocks, final norm."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfllm import registry
from tfllm.models.arguments import (
    check_backbone_arguments,
    derived_sizes,
    residual_output_range,
)
from tfllm.models.block import TransformerBlock
from tfllm.registry import ConfigError


@registry.register("model", "decoder")
class DecoderBackbone(keras.Model):
    """A stack of causal transformer blocks over token embeddings; returns hidden states.

    Built only from registry specs, so any registered (or plugin) positional encoding,
    attention, FFN or norm drops in. One positional layer is shared by all blocks. Supports a
    KV cache for incremental decoding (see `init_cache`).

    Args:
        vocabulary_size: int. Number of tokens.
        num_layers: int. Number of blocks.
        hidden_dim: int. Model width.
        num_heads: int. Query heads per attention layer.
        intermediate_dim: int or None. FFN inner width (`4 * hidden_dim` if None).
        max_sequence_length: int. Longest sequence (positions, caches, generation).
        dropout: float. Embedding and residual dropout.
        norm_placement: str. `pre` or `post`.
        attention: dict. Attention spec, e.g. `{"name": "mha", "num_kv_heads": 2}`.
        positional: dict. Positional spec, e.g. `{"name": "rope"}`.
        ffn: dict. FFN spec.
        norm: dict. Norm spec.
        initializer_range: float. Standard deviation of the normal initializers.
        scaled_residual_init: bool. Initialize the projections that write into the residual
            stream with `initializer_range / sqrt(2 * num_layers)` (GPT-2, nanoGPT).
        zero_residual_init: bool. Initialize those projections at zero instead
            (modded-nanogpt): each block starts as the identity. At most one of the two.
        unet_skips: bool. U-net skip connections (modded-nanogpt): each block of the last
            `num_layers // 2` adds a learned multiple (one scalar each, starting at 1) of the
            output of its mirror in the first half to its input.
        value_embeddings: int. Token-indexed tables added to the attention values
            (modded-nanogpt): table `k` feeds block `k` and its mirror `num_layers - 1 - k`;
            at most `num_layers // 2`, 0 for none. The attention must declare
            `supports_value_embeddings`.

    Call arguments:
        token_ids: `(B, T)` int32.
        padding_mask: optional `(B, T)`, true for real tokens.
        cache: optional list of per-layer `(k, v)` caches.
        cache_index: int32 scalar, where `token_ids` start inside the cache.

    Returns:
        Hidden states `(B, T, hidden_dim)`, or `(hidden, cache)` when a cache was given.

    Example:

    >>> import numpy as np
    >>> model = DecoderBackbone(vocabulary_size=50, num_layers=2, hidden_dim=16, num_heads=4,
    ...                         max_sequence_length=32, positional={"name": "rope"})
    >>> model(np.zeros((2, 8), "int32")).shape
    TensorShape([2, 8, 16])
    """

    causal = True

    def __init__(
        self,
        vocabulary_size: int,
        num_layers: int,
        hidden_dim: int,
        num_heads: int,
        intermediate_dim: int | None = None,
        max_sequence_length: int = 1024,
        dropout: float = 0.0,
        norm_placement: str = "pre",
        attention: dict[str, Any] | None = None,
        positional: dict[str, Any] | None = None,
        ffn: dict[str, Any] | None = None,
        norm: dict[str, Any] | None = None,
        initializer_range: float = 0.02,
        scaled_residual_init: bool = False,
        zero_residual_init: bool = False,
        unet_skips: bool = False,
        value_embeddings: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_backbone_arguments(
            dropout,
            vocabulary_size=vocabulary_size,
            num_layers=num_layers,
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            max_sequence_length=max_sequence_length,
        )
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.max_sequence_length = max_sequence_length
        self.dropout = dropout
        self.norm_placement = norm_placement
        self.attention_spec = dict(attention or {"name": "mha"})
        head_dim, self.intermediate_dim = derived_sizes(
            hidden_dim, num_heads, intermediate_dim, self.attention_spec.get("head_dim")
        )
        self.positional_spec = dict(positional or {"name": "learned"})
        self.ffn_spec = dict(ffn or {"name": "mlp"})
        self.norm_spec = dict(norm or {"name": "layernorm"})
        self.initializer_range = initializer_range
        self.scaled_residual_init = scaled_residual_init
        self.zero_residual_init = zero_residual_init
        if not isinstance(unet_skips, bool):
            raise ValueError(f"unet_skips must be true or false, got {unet_skips!r}")
        self.unet_skips = unet_skips
        if (
            not isinstance(value_embeddings, int)
            or isinstance(value_embeddings, bool)
            or not 0 <= value_embeddings <= num_layers // 2
        ):
            raise ValueError(
                f"value_embeddings must be a whole number from 0 to num_layers // 2 = "
                f"{num_layers // 2}, got {value_embeddings!r}"
            )
        self.value_embeddings = value_embeddings
        output_range = residual_output_range(
            initializer_range, num_layers, scaled_residual_init, zero_residual_init
        )
        dtype = self.dtype_policy
        context = dict(
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            head_dim=head_dim,
            max_sequence_length=max_sequence_length,
            initializer_range=initializer_range,
            causal=self.causal,
        )
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size,
            hidden_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=initializer_range),
            dtype=dtype,
            name="token_embedding",
        )
        self.positional = registry.build(
            "positional",
            self.positional_spec,
            context,
            key="positional",
            dtype=dtype,
            name="positional",
        )
        self.embedding_dropout = keras.layers.Dropout(dropout, dtype=dtype)
        self.blocks = [
            TransformerBlock(
                hidden_dim=hidden_dim,
                num_heads=num_heads,
                intermediate_dim=self.intermediate_dim,
                attention=self.attention_spec,
                ffn=self.ffn_spec,
                norm=self.norm_spec,
                norm_placement=norm_placement,
                dropout=dropout,
                causal=self.causal,
                initializer_range=initializer_range,
                output_initializer_range=output_range,
                dtype=dtype,
                name=f"block_{i}",
            )
            for i in range(num_layers)
        ]
        self.final_norm = (
            registry.build("norm", self.norm_spec, context, dtype=dtype, name="final_norm")
            if norm_placement == "pre"
            else None
        )
        self.value_tables = self._make_value_tables()
        self.build((None, None))

    @property
    def head_dim(self) -> int:
        return self.blocks[0].attention.head_dim

    @property
    def num_kv_heads(self) -> int:
        return self.blocks[0].attention.num_kv_heads

    def build(self, input_shape):
        hidden_shape = (None, None, self.hidden_dim)
        self.token_embedding.build(input_shape)
        self.positional.build(hidden_shape)
        for block in self.blocks:
            block.build(hidden_shape)
        if self.final_norm is not None:
            self.final_norm.build(hidden_shape)
        for table in self.value_tables:
            table.build(input_shape)
        if self.unet_skips and not hasattr(self, "skip_weights"):
            self.skip_weights = self.add_weight(
                name="skip_weights", shape=(self.num_layers // 2,), initializer="ones"
            )
        self.built = True

    def _make_value_tables(self) -> list[keras.layers.Embedding]:
        if not self.value_embeddings:
            return []
        attention = self.blocks[0].attention
        if not getattr(attention, "supports_value_embeddings", False):
            raise ConfigError(
                f"model.value_embeddings: attention '{self.attention_spec['name']}' does not "
                "take value embeddings (it does not declare supports_value_embeddings); use mha "
                "or set model.value_embeddings=0"
            )
        return [
            keras.layers.Embedding(
                self.vocabulary_size,
                attention.num_kv_heads * attention.head_dim,
                embeddings_initializer=keras.initializers.RandomNormal(
                    stddev=self.initializer_range
                ),
                dtype=self.dtype_policy,
                name=f"value_embedding_{k}",
            )
            for k in range(self.value_embeddings)
        ]

    def _values_in(self, token_ids) -> list[Any]:
        """Each block's value embedding `(B, T, Hkv * Dh)`, or None for blocks without one."""
        looked_up = [table(token_ids) for table in self.value_tables]
        per_block: list[Any] = [None] * self.num_layers
        for k, values in enumerate(looked_up):
            per_block[k] = per_block[self.num_layers - 1 - k] = values
        return per_block

    def _skip_in(self, i: int, x, skips: list):
        """With `unet_skips`: keep the output `x` of block `i - 1` when that block is in the
        first half, and return block `i`'s input (`x`, plus its mirror's output in the second
        half)."""
        if not self.unet_skips:
            return x
        half = self.num_layers // 2
        if 0 < i <= half:
            skips.append(x)
        first_mirrored = self.num_layers - half
        if i >= first_mirrored:
            w = keras.ops.cast(self.skip_weights[i - first_mirrored], x.dtype)
            x = x + w * skips.pop()  # (B, T, D)
        return x

    def init_cache(self, batch_size, max_length) -> list[Any]:
        """Empty decoding caches, one per layer, each made by that layer's attention
        (`attention.init_cache`; for `mha` a `(k, v)` pair of `(B, Hkv, max_length, head_dim)`)."""
        return [block.attention.init_cache(batch_size, max_length) for block in self.blocks]

    def cache_spec(self, batch_size: int | None = None) -> list[Any]:
        """`tf.TensorSpec`s of `init_cache(batch_size, L)` for any length `L` (the dimension
        that changes with `L` is `None`): input signatures for traced decoding steps."""

        def spec(a, b):
            shape = [x if x == y else None for x, y in zip(a.shape, b.shape, strict=True)]
            shape[0] = batch_size
            return tf.TensorSpec(shape, a.dtype)

        one = self.init_cache(1, 2)
        two = self.init_cache(1, 3)
        return tf.nest.map_structure(spec, one, two)

    def call(self, token_ids, padding_mask=None, cache=None, cache_index=None, training=None):
        t = tf.shape(token_ids)[1]
        start = tf.constant(0, "int32") if cache_index is None else tf.cast(cache_index, "int32")
        positions = start + tf.range(t)  # (T,)
        x = self.embed_tokens(token_ids, positions)  # (B, T, D)
        x = self.embedding_dropout(x, training=training)
        new_cache, skips = [], []
        values = self._values_in(token_ids)
        for i, block in enumerate(self.blocks):
            x = self._skip_in(i, x, skips)  # (B, T, D)
            out = block(
                x,
                positions=positions,
                padding_mask=padding_mask,
                cache=None if cache is None else cache[i],
                cache_index=cache_index,
                positional=self.positional,
                training=training,
                value_embedding=values[i],
            )
            if cache is None:
                x = out
            else:
                x, layer_cache = out
                new_cache.append(layer_cache)
        if self.final_norm is not None:
            x = self.final_norm(x)  # (B, T, D)
        if cache is not None:
            return x, new_cache
        return x

    def embed_tokens(self, token_ids, positions, segment_ids=None):
        """Token embeddings with the absolute positional part: `(B, T)` ids to `(B, T, D)`."""
        x = self.token_embedding(token_ids)  # (B, T, D)
        return self.positional.embed(x, positions)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.hidden_dim,)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "vocabulary_size": self.vocabulary_size,
            "num_layers": self.num_layers,
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "max_sequence_length": self.max_sequence_length,
            "dropout": self.dropout,
            "norm_placement": self.norm_placement,
            "attention": self.attention_spec,
            "positional": self.positional_spec,
            "ffn": self.ffn_spec,
            "norm": self.norm_spec,
            "initializer_range": self.initializer_range,
            "scaled_residual_init": self.scaled_residual_init,
            "zero_residual_init": self.zero_residual_init,
            "unet_skips": self.unet_skips,
            "value_embeddings": self.value_embeddings,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)
