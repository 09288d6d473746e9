"""The encoder-decoder backbone (T5): a bidirectional encoder read by a causal decoder."""

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


@registry.register("model", "encoder_decoder")
class EncoderDecoderBackbone(keras.Model):
    """An encoder stack and a decoder stack whose blocks cross-attend to the encoder's output.

    The same registry parts as the decoder-only and encoder-only backbones: any positional
    encoding (T5's `relative` bias by default), attention, FFN or norm drops in. The token
    embedding is shared by both stacks (and by a tied LM head). Each stack owns its positional
    layer: bidirectional for the encoder, causal for the decoder. The decoder's self-attention
    has the usual KV cache; its cross-attention keys and values are projected once per input
    (`init_cache`) and reused at every step.

    Args:
        vocabulary_size: int. Number of tokens.
        num_layers: int. Encoder blocks.
        hidden_dim: int. Model width.
        num_heads: int. Query heads per attention layer.
        intermediate_dim: int or None. FFN inner width (`4 * hidden_dim` if None).
        num_decoder_layers: int or None. Decoder blocks (`num_layers` if None).
        max_sequence_length: int. Longest encoder input and longest decoder sequence.
        dropout: float. Embedding and residual dropout.
        norm_placement: str. `pre` (T5) or `post`.
        attention: dict. Self-attention spec (both stacks).
        cross_attention: dict or None. Cross-attention spec (default `{"name": "mha"}` with the
            self-attention's `num_kv_heads`).
        positional: dict. Positional spec (each stack builds its own; `causal` is set).
        ffn: dict. FFN spec.
        norm: dict. Norm spec.
        initializer_range: float. Standard deviation of the normal initializers.
        scaled_residual_init: bool. Residual-branch projections start at
            `initializer_range / sqrt(2 * layers)`.
        zero_residual_init: bool. They start at zero instead (at most one of the two).

    Call arguments:
        encoder_ids: `(B, S)` int32 source tokens.
        decoder_ids: `(B, T)` int32 decoder inputs (the target shifted right).
        encoder_padding_mask: optional `(B, S)`, true for real source tokens.

    Returns:
        Decoder hidden states `(B, T, hidden_dim)`.

    Example:

    >>> import numpy as np
    >>> model = EncoderDecoderBackbone(vocabulary_size=50, num_layers=2, hidden_dim=16,
    ...                                num_heads=4, max_sequence_length=32,
    ...                                positional={"name": "relative"})
    >>> model(np.zeros((2, 9), "int32"), np.zeros((2, 5), "int32")).shape
    TensorShape([2, 5, 16])

    Reference: Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified
    Text-to-Text Transformer".
    """

    causal = True  # what a task sees: the decoder predicts left to right

    def __init__(
        self,
        vocabulary_size: int,
        num_layers: int,
        hidden_dim: int,
        num_heads: int,
        intermediate_dim: int | None = None,
        num_decoder_layers: int | None = None,
        max_sequence_length: int = 512,
        dropout: float = 0.0,
        norm_placement: str = "pre",
        attention: dict[str, Any] | None = None,
        cross_attention: dict[str, Any] | None = None,
        positional: dict[str, Any] | None = None,
        ffn: dict[str, Any] | None = None,
        norm: dict[str, Any] | None = None,
        initializer_range: float = 0.02,
        scaled_residual_init: bool = False,
        zero_residual_init: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        num_decoder_layers = num_layers if num_decoder_layers is None else num_decoder_layers
        check_backbone_arguments(
            dropout,
            vocabulary_size=vocabulary_size,
            num_layers=num_layers,
            num_decoder_layers=num_decoder_layers,
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            max_sequence_length=max_sequence_length,
        )
        self.vocabulary_size = vocabulary_size
        self.num_encoder_layers = num_layers
        self.num_decoder_layers = num_decoder_layers
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.max_sequence_length = max_sequence_length
        self.dropout = dropout
        self.norm_placement = norm_placement
        self.attention_spec = dict(attention or {"name": "mha"})
        head_dim, self.intermediate_dim = derived_sizes(
            hidden_dim, num_heads, intermediate_dim, self.attention_spec.get("head_dim")
        )
        default_cross = {"name": "mha"}
        if self.attention_spec.get("num_kv_heads"):
            default_cross["num_kv_heads"] = self.attention_spec["num_kv_heads"]
        self.cross_attention_spec = dict(cross_attention or default_cross)
        self.positional_spec = dict(positional or {"name": "relative"})
        self.ffn_spec = dict(ffn or {"name": "mlp", "activation": "relu"})
        self.norm_spec = dict(norm or {"name": "rmsnorm"})
        self.initializer_range = initializer_range
        self.scaled_residual_init = scaled_residual_init
        self.zero_residual_init = zero_residual_init
        output_range = residual_output_range(
            initializer_range,
            num_layers + num_decoder_layers,
            scaled_residual_init,
            zero_residual_init,
        )
        dtype = self.dtype_policy
        context = dict(
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            head_dim=head_dim,
            max_sequence_length=max_sequence_length,
            initializer_range=initializer_range,
        )
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size,
            hidden_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=initializer_range),
            dtype=dtype,
            name="token_embedding",
        )
        self.embedding_dropout = keras.layers.Dropout(dropout, dtype=dtype)

        def positional_layer(causal: bool, name: str):
            return registry.build(
                "positional",
                self.positional_spec,
                {**context, "causal": causal},
                key="positional",
                dtype=dtype,
                name=name,
            )

        def block(i: int, causal: bool, stack: str):
            return TransformerBlock(
                hidden_dim=hidden_dim,
                num_heads=num_heads,
                intermediate_dim=self.intermediate_dim,
                attention=self.attention_spec,
                ffn=self.ffn_spec,
                norm=self.norm_spec,
                norm_placement=norm_placement,
                dropout=dropout,
                causal=causal,
                initializer_range=initializer_range,
                output_initializer_range=output_range,
                cross_attention=self.cross_attention_spec if causal else None,
                dtype=dtype,
                name=f"{stack}_block_{i}",
            )

        def final_norm(name: str):
            if norm_placement != "pre":
                return None
            return registry.build("norm", self.norm_spec, context, dtype=dtype, name=name)

        self.encoder_positional = positional_layer(False, "encoder_positional")
        self.decoder_positional = positional_layer(True, "decoder_positional")
        self.encoder_blocks = [block(i, False, "encoder") for i in range(num_layers)]
        self.decoder_blocks = [block(i, True, "decoder") for i in range(num_decoder_layers)]
        self.encoder_norm = final_norm("encoder_norm")
        self.decoder_norm = final_norm("decoder_norm")
        self.build((None, None))

    # What generic code (FLOPs, exports) reads off a backbone.
    @property
    def num_layers(self) -> int:
        return self.num_encoder_layers + self.num_decoder_layers

    @property
    def head_dim(self) -> int:
        return self.decoder_blocks[0].attention.head_dim

    @property
    def num_kv_heads(self) -> int:
        return self.decoder_blocks[0].attention.num_kv_heads

    def build(self, input_shape):
        hidden_shape = (None, None, self.hidden_dim)
        self.token_embedding.build(input_shape)
        for layer in (self.encoder_positional, self.decoder_positional):
            layer.build(hidden_shape)
        for b in self.encoder_blocks + self.decoder_blocks:
            b.build(hidden_shape)
        for layer in (self.encoder_norm, self.decoder_norm):
            if layer is not None:
                layer.build(hidden_shape)
        self.built = True

    def encode(self, encoder_ids, padding_mask=None, training=None):
        """Encoder states `(B, S, hidden_dim)` of source tokens `(B, S)`."""
        positions = tf.range(tf.shape(encoder_ids)[1])  # (S,)
        x = self.token_embedding(encoder_ids)  # (B, S, D)
        x = self.encoder_positional.embed(x, positions)
        x = self.embedding_dropout(x, training=training)
        for b in self.encoder_blocks:
            x = b(
                x,
                positions=positions,
                padding_mask=padding_mask,
                positional=self.encoder_positional,
                training=training,
            )  # (B, S, D)
        if self.encoder_norm is not None:
            x = self.encoder_norm(x)
        return x

    def init_cache(self, encoder_output, encoder_padding_mask, max_length) -> dict[str, Any]:
        """A decoding cache for `max_length` decoder positions reading `encoder_output`
        `(B, S, D)`: each layer's empty self-attention cache, each layer's projected encoder
        keys and values, and the encoder padding mask `(B, S)` (ones if None). Every leaf has
        the batch first, so beam search can reorder it."""
        b = tf.shape(encoder_output)[0]
        if encoder_padding_mask is None:
            encoder_padding_mask = tf.ones(tf.shape(encoder_output)[:2], tf.int32)
        return {
            "self": [blk.attention.init_cache(b, max_length) for blk in self.decoder_blocks],
            "cross": [
                blk.cross_attention.project_context(encoder_output) for blk in self.decoder_blocks
            ],
            "encoder_mask": tf.cast(encoder_padding_mask, tf.int32),
        }

    def decode(
        self,
        decoder_ids,
        encoder_output=None,
        encoder_padding_mask=None,
        cache=None,
        cache_index=None,
        training=None,
    ):
        """Decoder states `(B, T, D)` for `decoder_ids` `(B, T)`, reading `encoder_output`, or,
        with a `cache` from `init_cache`, placed at `cache_index`: then `(states, cache)`."""
        t = tf.shape(decoder_ids)[1]
        start = tf.constant(0, "int32") if cache_index is None else tf.cast(cache_index, "int32")
        positions = start + tf.range(t)  # (T,)
        x = self.token_embedding(decoder_ids)  # (B, T, D)
        x = self.decoder_positional.embed(x, positions)
        x = self.embedding_dropout(x, training=training)
        new_self = []
        for i, b in enumerate(self.decoder_blocks):
            common = dict(
                positions=positions, positional=self.decoder_positional, training=training
            )
            if cache is None:
                x = b(x, context=encoder_output, context_mask=encoder_padding_mask, **common)
            else:
                x, layer_cache = b(
                    x,
                    cache=cache["self"][i],
                    cache_index=start,
                    context_kv=cache["cross"][i],
                    context_mask=cache["encoder_mask"],
                    **common,
                )  # (B, T, D)
                new_self.append(layer_cache)
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        if cache is None:
            return x
        return x, {**cache, "self": new_self}

    def call(self, encoder_ids, decoder_ids, encoder_padding_mask=None, training=None):
        encoded = self.encode(encoder_ids, encoder_padding_mask, training=training)  # (B, S, D)
        return self.decode(decoder_ids, encoded, encoder_padding_mask, training=training)

    def compute_output_shape(self, encoder_ids_shape, decoder_ids_shape):
        return tuple(decoder_ids_shape) + (self.hidden_dim,)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "vocabulary_size": self.vocabulary_size,
            "num_layers": self.num_encoder_layers,
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "num_decoder_layers": self.num_decoder_layers,
            "max_sequence_length": self.max_sequence_length,
            "dropout": self.dropout,
            "norm_placement": self.norm_placement,
            "attention": self.attention_spec,
            "cross_attention": self.cross_attention_spec,
            "positional": self.positional_spec,
            "ffn": self.ffn_spec,
            "norm": self.norm_spec,
            "initializer_range": self.initializer_range,
            "scaled_residual_init": self.scaled_residual_init,
            "zero_residual_init": self.zero_residual_init,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)
