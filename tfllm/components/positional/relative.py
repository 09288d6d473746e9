"""T5's relative position bias: a learned scalar per head for each bucket of key-query distance."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tfllm.components.positional.base import PositionalEncoding
from tfllm.registry import register


def relative_position_buckets(relative_position, causal: bool, num_buckets: int, max_distance: int):
    """Bucket ids of `key - query` distances, as in T5.

    Half of the buckets (all of them when `causal`, where only the past is visible) hold exact
    distances `0..max_exact-1`; the rest are spaced logarithmically up to `max_distance`, and
    anything farther shares the last bucket. Bidirectionally, keys after the query use the
    upper half of the buckets.

    Args:
        relative_position: int32 tensor of `key_position - query_position`.

    Returns:
        int32 bucket ids in `[0, num_buckets)`, same shape.
    """
    buckets = tf.zeros_like(relative_position)
    if causal:
        n = tf.maximum(-relative_position, 0)
    else:
        num_buckets //= 2
        buckets += tf.cast(relative_position > 0, tf.int32) * num_buckets
        n = tf.abs(relative_position)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    scaled = tf.math.log(tf.cast(tf.maximum(n, 1), tf.float32) / max_exact) / math.log(
        max_distance / max_exact
    )
    large = max_exact + tf.cast(scaled * (num_buckets - max_exact), tf.int32)
    large = tf.minimum(large, num_buckets - 1)
    return buckets + tf.where(is_small, n, large)


@register("positional", "relative")
class RelativePositionBias(PositionalEncoding):
    """Adds a learned bias `b[h, bucket(j - i)]` to the logits of head `h`, query `i`, key `j`.

    Distances are bucketed as in T5 (`relative_position_buckets`): exact when near, logarithmic
    when far, so the bias extends to any length. One table is shared by every layer of a stack
    (the backbone owns one positional layer), as in T5. Decoders get causal buckets (only the
    past), encoders bidirectional ones; the model sets `causal`.

    Args:
        num_heads: int. Query heads (set by the model).
        num_buckets: int. Distance buckets (32 in T5).
        max_distance: int. Distances beyond this share the last bucket (128 in T5).
        causal: bool. Decoder (past only) or encoder buckets (set by the model).
        initializer_range: float. Standard deviation of the normal initializer.

    Call arguments:
        x: `(B, T, D)` embeddings, returned unchanged (the bias acts in attention).

    Example:

    >>> import numpy as np
    >>> bias = RelativePositionBias(num_heads=4, num_buckets=8, max_distance=16)
    >>> pos = np.arange(5, dtype="int32")
    >>> bias.attention_bias(pos, pos).shape
    TensorShape([4, 5, 5])

    Reference: Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified
    Text-to-Text Transformer"; Shaw et al. 2018.
    """

    def __init__(
        self,
        num_heads: int,
        num_buckets: int = 32,
        max_distance: int = 128,
        causal: bool = False,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_heads <= 0:
            raise ValueError(f"num_heads must be positive, got {num_heads}")
        minimum = 2 if causal else 4
        if num_buckets < minimum:
            raise ValueError(f"num_buckets must be at least {minimum}, got {num_buckets}")
        exact = (num_buckets if causal else num_buckets // 2) // 2
        if max_distance <= exact:
            raise ValueError(
                f"max_distance must exceed the {exact} exact buckets, got {max_distance}"
            )
        self.num_heads = num_heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.causal = causal
        self.initializer_range = initializer_range

    def build(self, input_shape=None):
        self.bias_table = self.add_weight(
            name="bias_table",
            shape=(self.num_buckets, self.num_heads),
            initializer=keras.initializers.RandomNormal(stddev=self.initializer_range),
        )
        self.built = True

    def attention_bias(self, query_positions, key_positions):
        # query_positions: (Tq,), key_positions: (Tk,) -> (H, Tq, Tk)
        if not self.built:  # a hook, not `__call__`: Keras would not build the table first
            self.build()
        relative = (
            tf.cast(key_positions, tf.int32)[None, :] - tf.cast(query_positions, tf.int32)[:, None]
        )  # (Tq, Tk)
        buckets = relative_position_buckets(
            relative, self.causal, self.num_buckets, self.max_distance
        )
        bias = tf.gather(tf.convert_to_tensor(self.bias_table), buckets)  # (Tq, Tk, H)
        return tf.transpose(bias, [2, 0, 1])

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
            causal=self.causal,
            initializer_range=self.initializer_range,
        )
        return config
