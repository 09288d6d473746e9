"""The two-layer position-wise MLP of GPT-2 and BERT."""

from __future__ import annotations

import keras

from tfllm.components import products
from tfllm.components.tokens import flatten_tokens, unflatten_tokens
from tfllm.registry import register

ACTIVATIONS = ("relu", "gelu", "gelu_approximate", "silu", "relu2")


def activate(h, activation: str):
    """One of `ACTIVATIONS` applied to `h` (`gelu_approximate` is GPT-2's tanh form; `relu2`
    is ReLU squared, the modded-nanogpt speedrun's MLP activation: So et al. 2021, Primer)."""
    if activation == "relu2":
        return keras.ops.square(keras.ops.relu(h))
    if activation == "gelu_approximate":
        return keras.activations.gelu(h, approximate=True)
    if activation == "gelu":
        return keras.activations.gelu(h, approximate=False)
    if activation == "silu":
        # x·σ(x) with σ(x) = (1 + tanh(x/2)) / 2: the same function (within 3e-6 of Keras's
        # `silu`), but not the `x * sigmoid(x)` pattern that Grappler's oneDNN remapper fuses
        # into `_MklSwish`, whose fixed cost per call doubles a decode step's activation time
        # on CPUs where TensorFlow turns oneDNN on (docs/efficiency.md).
        return h * (0.5 + 0.5 * keras.ops.tanh(0.5 * h))
    return keras.activations.get(activation)(h)


@register("ffn", "mlp")
class MLP(keras.layers.Layer):
    """`Dense(intermediate_dim, activation) -> Dense(hidden_dim)`, applied at every position.

    Args:
        hidden_dim: int. Model width (set by the model).
        intermediate_dim: int. Inner width (set by the model, usually `4 * hidden_dim`).
        activation: str. One of `relu`, `gelu`, `gelu_approximate` (GPT-2's tanh form), `silu`,
            `relu2` (ReLU squared).
        use_bias: bool. Biases on both projections.
        initializer_range: float. Standard deviation of the normal kernel initializer.
        output_initializer_range: float or None. Standard deviation for the output projection
            (set by the model when it scales residual-branch initialization); None uses
            `initializer_range`.

    Call arguments:
        x: `(B, T, hidden_dim)`.

    Example:

    >>> import numpy as np
    >>> MLP(hidden_dim=8, intermediate_dim=32)(np.ones((2, 3, 8), "float32")).shape
    TensorShape([2, 3, 8])

    Reference: Vaswani et al. 2017; Hendrycks & Gimpel 2016 (GELU).
    """

    def __init__(
        self,
        hidden_dim: int,
        intermediate_dim: int,
        activation: str = "gelu",
        use_bias: bool = True,
        initializer_range: float = 0.02,
        output_initializer_range: float | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got '{activation}'")
        if intermediate_dim <= 0:
            raise ValueError(f"intermediate_dim must be positive, got {intermediate_dim}")
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.activation = activation
        self.use_bias = use_bias
        self.initializer_range = initializer_range
        self.output_initializer_range = output_initializer_range
        out_init = keras.initializers.RandomNormal(
            stddev=initializer_range
            if output_initializer_range is None
            else output_initializer_range
        )
        init = keras.initializers.RandomNormal(stddev=initializer_range)
        self.up = products.Projection(
            intermediate_dim,
            use_bias=use_bias,
            kernel_initializer=init,
            dtype=self.dtype_policy,
            name="up",
        )
        self.down = products.Projection(
            hidden_dim,
            use_bias=use_bias,
            kernel_initializer=out_init,
            dtype=self.dtype_policy,
            name="down",
        )

    def build(self, input_shape):
        self.up.build(input_shape)
        self.down.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))
        self.built = True

    def call(self, x):
        h = activate(self.up(flatten_tokens(x)), self.activation)  # (B*T, I)
        return unflatten_tokens(self.down(h), x)  # (B, T, D)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            activation=self.activation,
            use_bias=self.use_bias,
            initializer_range=self.initializer_range,
            output_initializer_range=self.output_initializer_range,
        )
        return config
