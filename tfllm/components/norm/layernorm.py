"""Layer normalization, computed in float32."""

from __future__ import annotations

import keras
from keras import ops

from tfllm.registry import register


@register("norm", "layernorm")
class LayerNorm(keras.layers.Layer):
    """Normalizes the last axis to zero mean and unit variance, then scales and shifts.

    Statistics are computed in float32 whatever the compute dtype, so mixed precision is safe.

    Args:
        epsilon: float. Added to the variance.
        use_bias: bool. Learn a shift (nanoGPT can turn it off).

    Call arguments:
        x: `(..., D)`.

    Example:

    >>> import numpy as np
    >>> LayerNorm()(np.ones((2, 3, 8), "float32")).shape
    TensorShape([2, 3, 8])

    Reference: Ba et al. 2016, "Layer Normalization".
    """

    def __init__(self, epsilon: float = 1e-5, use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        self.epsilon = epsilon
        self.use_bias = use_bias

    def build(self, input_shape):
        dim = input_shape[-1]
        self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones")
        self.beta = (
            self.add_weight(name="beta", shape=(dim,), initializer="zeros")
            if self.use_bias
            else None
        )
        self.built = True

    def call(self, x):
        h = ops.cast(x, "float32")
        mean = ops.mean(h, axis=-1, keepdims=True)
        var = ops.mean(ops.square(h - mean), axis=-1, keepdims=True)
        h = (h - mean) * ops.rsqrt(var + self.epsilon) * ops.cast(self.gamma, "float32")
        if self.beta is not None:
            h = h + ops.cast(self.beta, "float32")
        return ops.cast(h, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon, use_bias=self.use_bias)
        return config
