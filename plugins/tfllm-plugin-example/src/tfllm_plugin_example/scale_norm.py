"""ScaleNorm: L2 normalization with a single learned scale."""

from __future__ import annotations

import keras
from keras import ops

from tfllm.registry import register


@register("norm", "scalenorm")
class ScaleNorm(keras.layers.Layer):
    """`g * x / max(||x||, epsilon)` over the last axis, with one learned scalar `g`.

    One parameter per norm instead of `hidden_dim` (LayerNorm has `2 * hidden_dim`);
    `g` starts at `sqrt(hidden_dim)`, the norm of a unit-variance vector. Computed in float32.

    Args:
        epsilon: float. Lower bound on the norm.

    Example:

    >>> import numpy as np
    >>> norm = ScaleNorm()
    >>> norm(np.ones((2, 3, 4), "float32")).shape
    TensorShape([2, 3, 4])

    Reference: Nguyen & Salazar 2019, "Transformers without Tears: Improving the Normalization
    of Self-Attention".
    """

    def __init__(self, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        self.epsilon = epsilon

    def build(self, input_shape):
        dim = float(input_shape[-1])
        self.scale = self.add_weight(
            name="scale", shape=(), initializer=keras.initializers.Constant(dim**0.5)
        )
        self.built = True

    def call(self, x):
        # x: (B, T, D)
        h = ops.cast(x, "float32")
        norm = ops.sqrt(ops.sum(ops.square(h), axis=-1, keepdims=True))  # (B, T, 1)
        h = h * (ops.cast(self.scale, "float32") / ops.maximum(norm, self.epsilon))
        return ops.cast(h, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon)
        return config
