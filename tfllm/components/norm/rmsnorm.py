"""Root-mean-square normalization, computed in float32."""

from __future__ import annotations

import keras
from keras import ops

from tfllm.registry import register


@register("norm", "rmsnorm")
class RMSNorm(keras.layers.Layer):
    """Divides by the root mean square of the last axis and scales (no centring, no shift).

    Args:
        epsilon: float. Added to the mean square.

    Call arguments:
        x: `(..., D)`.

    Example:

    >>> import numpy as np
    >>> RMSNorm()(np.ones((2, 3, 8), "float32")).shape
    TensorShape([2, 3, 8])

    Reference: Zhang & Sennrich 2019, "Root Mean Square Layer Normalization".
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        self.epsilon = epsilon

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")
        self.built = True

    def call(self, x):
        h = ops.cast(x, "float32")
        h = h * ops.rsqrt(ops.mean(ops.square(h), axis=-1, keepdims=True) + self.epsilon)
        return ops.cast(h * ops.cast(self.scale, "float32"), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon)
        return config
