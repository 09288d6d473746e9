"""The scalar head: one number per sequence (a reward model's score, a value estimate)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfllm.components.heads.pooling import POOLINGS, pool
from tfllm.registry import register


@register("head", "scalar")
class ScalarHead(keras.layers.Layer):
    """Pools a sequence and maps it to one float32 score per row.

    A decoder's reward model pools `last_token` (the last real token has read the prompt and
    the reply); per-token values (PPO's critic) use `pooling=none`.

    Args:
        pooling: str. `last_token`, `mean`, `cls`, or `none` (a score per token).
        dropout: float. Dropout on the hidden states.
        initializer_range: float. Standard deviation of the kernel initializer.

    Call arguments:
        x: `(B, T, D)` hidden states.
        padding_mask: optional `(B, T)`, true for real tokens.
        training: bool, for dropout.

    Returns:
        `(B,)` scores, or `(B, T)` with `pooling=none`.

    Example:

    >>> import numpy as np
    >>> ScalarHead()(np.ones((2, 5, 8), "float32")).shape
    TensorShape([2])

    Reference: Ouyang et al. 2022 (InstructGPT's reward model).
    """

    def __init__(
        self,
        pooling: str = "last_token",
        dropout: float = 0.0,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if pooling not in (*POOLINGS, "none"):
            raise ValueError(f"pooling must be one of {(*POOLINGS, 'none')}, got '{pooling}'")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.pooling = pooling
        self.dropout = dropout
        self.initializer_range = initializer_range
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
        self.score = keras.layers.Dense(
            1,
            kernel_initializer=keras.initializers.RandomNormal(stddev=initializer_range),
            dtype=self.dtype_policy,
            name="score",
        )

    def build(self, input_shape):
        self.score.build(input_shape)
        self.built = True

    def call(self, x, padding_mask=None, training=None):
        x = self.dropout_layer(x, training=training)  # (B, T, D)
        if self.pooling != "none":
            x = pool(x, padding_mask, self.pooling)  # (B, D)
        return tf.cast(self.score(x), "float32")[..., 0]  # (B,) or (B, T)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:1]) if self.pooling != "none" else tuple(input_shape[:-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            pooling=self.pooling, dropout=self.dropout, initializer_range=self.initializer_range
        )
        return config
