"""Rotary position embeddings applied to queries and keys."""

from __future__ import annotations

import numpy as np
from keras import ops

from tfllm.components.positional.base import PositionalEncoding
from tfllm.registry import register


@register("positional", "rope")
class RotaryPositionalEncoding(PositionalEncoding):
    """Rotates query and key channel pairs by position-dependent angles (RoPE).

    Uses the "rotate half" channel layout of GPT-NeoX and Hugging Face Llama: channel `i` pairs
    with channel `i + head_dim / 2`. `scaling_factor > 1` divides positions by that factor
    (linear position interpolation) to stretch a trained context window.

    Args:
        head_dim: int. Size of each attention head (set by the model); must be even.
        max_wavelength: float. The base `theta` of the angle frequencies (10,000 in the paper,
            100,000 in SmolLM2).
        scaling_factor: float. Position interpolation factor, `>= 1`.

    Call arguments:
        x: `(B, T, D)` embeddings, returned unchanged (RoPE acts in attention).

    Example:

    >>> import numpy as np
    >>> rope = RotaryPositionalEncoding(head_dim=4)
    >>> q = np.ones((1, 3, 2, 4), "float32")  # (B, T, H, head_dim)
    >>> rope.rotate_query(q, np.arange(3, dtype="int32")).shape
    TensorShape([1, 3, 2, 4])

    Reference: Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position Embedding";
    Chen et al. 2023, "Extending Context Window of Large Language Models via Positional
    Interpolation".
    """

    def __init__(
        self,
        head_dim: int,
        max_wavelength: float = 10000.0,
        scaling_factor: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if head_dim <= 0 or head_dim % 2:
            raise ValueError(f"head_dim must be a positive even number for rope, got {head_dim}")
        if scaling_factor < 1.0:
            raise ValueError(f"scaling_factor must be >= 1.0, got {scaling_factor}")
        if max_wavelength <= 1:
            raise ValueError(f"max_wavelength must be > 1, got {max_wavelength}")
        self.head_dim = head_dim
        self.max_wavelength = max_wavelength
        self.scaling_factor = scaling_factor

    def _cos_sin(self, positions):
        # The frequencies (float32, as Hugging Face computes them) for both halves are a
        # constant, so a traced step computes only positions times frequencies.
        exponents = np.arange(self.head_dim // 2, dtype=np.float32) * np.float32(
            2.0 / self.head_dim
        )
        inv_freq = np.float32(1.0) / np.float32(self.max_wavelength) ** exponents  # (Dh/2,)
        inv_freq = np.concatenate([inv_freq, inv_freq])  # (Dh,)
        pos = ops.cast(positions, "float32")  # (T,)
        if self.scaling_factor != 1.0:
            pos = pos / self.scaling_factor
        angles = pos[:, None] * inv_freq  # (T, Dh)
        return ops.cos(angles)[None, :, None, :], ops.sin(angles)[None, :, None, :]

    @staticmethod
    def _rotate(x, cos, sin):
        # x: (B, T, H, Dh); cos, sin: (1, T, 1, Dh)
        y = ops.cast(x, "float32")
        y1, y2 = ops.split(y, 2, axis=-1)
        rotated = ops.concatenate([-y2, y1], axis=-1)
        return ops.cast(y * cos + rotated * sin, x.dtype)

    def rotate_query(self, q, positions):
        # q: (B, T, H, Dh); positions: (T,)
        cos, sin = self._cos_sin(positions)  # (1, T, 1, Dh)
        return self._rotate(q, cos, sin)

    def rotate_query_key(self, q, k, positions):
        # q: (B, T, H, Dh), k: (B, T, Hkv, Dh): one set of angles for both
        cls = type(self)
        if (
            cls.rotate_query is not RotaryPositionalEncoding.rotate_query
            or cls.rotate_key is not PositionalEncoding.rotate_key
        ):  # a subclass that changes either rotation (xPos) has them called
            return super().rotate_query_key(q, k, positions)
        cos, sin = self._cos_sin(positions)  # (1, T, 1, Dh)
        return self._rotate(q, cos, sin), self._rotate(k, cos, sin)

    def get_config(self):
        config = super().get_config()
        config.update(
            head_dim=self.head_dim,
            max_wavelength=self.max_wavelength,
            scaling_factor=self.scaling_factor,
        )
        return config
