"""The gated feed-forward block of PaLM and Llama (SiLU gate), and of T5 v1.1 (GELU gate)."""

from __future__ import annotations

import keras
from keras import ops

from tfllm.components import products
from tfllm.components.ffn.mlp import ACTIVATIONS, activate
from tfllm.components.matrices import FusedMatrices
from tfllm.components.tokens import flatten_tokens, unflatten_tokens
from tfllm.registry import register


@register("ffn", "swiglu")
class SwiGLU(keras.layers.Layer):
    """`down(act(gate(x)) * up(x))`, act SiLU by default (SwiGLU; GeGLU with a GELU);
    gate and up share one fused projection.

    Args:
        hidden_dim: int. Model width (set by the model).
        intermediate_dim: int. Inner width (set by the model). To match an MLP's parameter
            count use about `8/3 * hidden_dim`.
        use_bias: bool. Biases on the projections (Llama has none).
        activation: str. The gate's activation, one of `tfllm.components.ffn.mlp.ACTIVATIONS`
            (`silu`; `gelu_approximate` for T5 v1.1's gated-gelu).
        initializer_range: float. Standard deviation of the normal kernel initializer.
        output_initializer_range: float or None. Standard deviation for the output projection
            (set by the model when it scales residual-branch initialization); None uses
            `initializer_range`.

    Call arguments:
        x: `(B, T, hidden_dim)`.

    Example:

    >>> import numpy as np
    >>> SwiGLU(hidden_dim=8, intermediate_dim=16)(np.ones((2, 3, 8), "float32")).shape
    TensorShape([2, 3, 8])

    Reference: Shazeer 2020, "GLU Variants Improve Transformer".
    """

    def __init__(
        self,
        hidden_dim: int,
        intermediate_dim: int,
        use_bias: bool = False,
        activation: str = "silu",
        initializer_range: float = 0.02,
        output_initializer_range: float | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if intermediate_dim <= 0:
            raise ValueError(f"intermediate_dim must be positive, got {intermediate_dim}")
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}"
            )
        self.use_bias = use_bias
        self.activation = activation
        self.initializer_range = initializer_range
        self.output_initializer_range = output_initializer_range
        out_init = keras.initializers.RandomNormal(
            stddev=initializer_range
            if output_initializer_range is None
            else output_initializer_range
        )
        init = keras.initializers.RandomNormal(stddev=initializer_range)
        self.gate_up = products.Projection(
            2 * intermediate_dim,
            use_bias=use_bias,
            kernel_initializer=init,
            dtype=self.dtype_policy,
            name="gate_up",
        )
        self.down = products.Projection(
            hidden_dim,
            use_bias=use_bias,
            kernel_initializer=out_init,
            dtype=self.dtype_policy,
            name="down",
        )

    def build(self, input_shape):
        self.gate_up.build(input_shape)
        self.down.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))
        self.built = True

    def fused_matrices(self):
        """The gate and up blocks of `gate_up`."""
        i = self.intermediate_dim
        return [(self.gate_up.kernel, FusedMatrices(columns=(i, i)))]

    def call(self, x):
        h = flatten_tokens(x)  # (B*T, D): one 2-D matmul per projection
        gate, up = ops.split(self.gate_up(h), 2, axis=-1)  # (B*T, I) each
        return unflatten_tokens(self.down(activate(gate, self.activation) * up), x)  # (B, T, D)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            use_bias=self.use_bias,
            activation=self.activation,
            initializer_range=self.initializer_range,
            output_initializer_range=self.output_initializer_range,
        )
        return config
