"""Fixed sinusoidal position embeddings added to token embeddings."""

from __future__ import annotations

import math

from keras import ops

from tfllm.components.positional.base import PositionalEncoding
from tfllm.registry import register


@register("positional", "sinusoidal")
class SinusoidalPositionalEncoding(PositionalEncoding):
    """Adds the fixed sine/cosine table of Vaswani et al. to the token embeddings.

    Args:
        hidden_dim: int. Width of the embeddings (set by the model).
        max_wavelength: float. The longest wavelength of the table.

    Call arguments:
        x: `(B, T, hidden_dim)` embeddings.
        positions: optional `(T,)` int32 absolute positions (defaults to `0..T-1`).

    Example:

    >>> import numpy as np
    >>> layer = SinusoidalPositionalEncoding(hidden_dim=8)
    >>> layer(np.zeros((2, 5, 8), "float32")).shape
    TensorShape([2, 5, 8])

    Reference: Vaswani et al. 2017, "Attention Is All You Need".
    """

    def __init__(self, hidden_dim: int, max_wavelength: float = 10000.0, **kwargs):
        super().__init__(**kwargs)
        if hidden_dim <= 0 or hidden_dim % 2:
            raise ValueError(f"hidden_dim must be a positive even number, got {hidden_dim}")
        if max_wavelength <= 1:
            raise ValueError(f"max_wavelength must be > 1, got {max_wavelength}")
        self.hidden_dim = hidden_dim
        self.max_wavelength = max_wavelength

    def embed(self, x, positions):
        # x: (B, T, D); positions: (T,)
        half = self.hidden_dim // 2
        freqs = ops.exp(
            ops.arange(half, dtype="float32") * (-math.log(self.max_wavelength) / half)
        )  # (D/2,)
        angles = ops.cast(positions, "float32")[:, None] * freqs[None, :]  # (T, D/2)
        table = ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)  # (T, D)
        return x + ops.cast(table, x.dtype)[None]

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, max_wavelength=self.max_wavelength)
        return config
