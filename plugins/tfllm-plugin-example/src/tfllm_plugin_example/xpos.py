"""xPos: rotary position embeddings with an exponential decay in the query-key distance."""

from __future__ import annotations

from keras import ops

from tfllm.components.positional.rope import RotaryPositionalEncoding
from tfllm.registry import register


@register("positional", "xpos")
class XPosEncoding(RotaryPositionalEncoding):
    """Rotary embeddings whose rotated queries and keys are also scaled, so that attention logits
    decay smoothly with the distance between query and key (better length extrapolation).

    Frequency pair `i` of `head_dim / 2` gets a base `zeta_i = (i / (head_dim / 2) + gamma) /
    (1 + gamma)` in (0, 1]; a query at position `n` is multiplied by `zeta_i ** (n / scale_base)`
    and a key at position `m` by `zeta_i ** (-m / scale_base)`, so their product depends only on
    `n - m`. Cached decoding is unaffected: each position's scale depends on its own position.

    Args:
        head_dim: int. Size of each attention head (set by the model); must be even.
        max_wavelength: float. Rotary base wavelength.
        scale_base: float. Positions per decay step; larger decays more slowly.
        gamma: float. Offset that sets the strongest decay, `zeta_0 = gamma / (1 + gamma)`.

    Example:

    >>> import numpy as np
    >>> xpos = XPosEncoding(head_dim=4)
    >>> q = np.ones((1, 3, 2, 4), "float32")  # (B, T, H, head_dim)
    >>> xpos.rotate_query(q, np.arange(3)).shape
    TensorShape([1, 3, 2, 4])

    Reference: Sun et al. 2022, "A Length-Extrapolatable Transformer".
    """

    def __init__(
        self,
        head_dim: int,
        max_wavelength: float = 10000.0,
        scale_base: float = 512.0,
        gamma: float = 0.4,
        **kwargs,
    ):
        super().__init__(head_dim=head_dim, max_wavelength=max_wavelength, **kwargs)
        if scale_base <= 0:
            raise ValueError(f"scale_base must be positive, got {scale_base}")
        if gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        self.scale_base = scale_base
        self.gamma = gamma

    def _scale(self, positions, sign: float):
        half = self.head_dim // 2
        zeta = (ops.arange(half, dtype="float32") / half + self.gamma) / (1.0 + self.gamma)
        power = sign * ops.cast(positions, "float32")[:, None] / self.scale_base  # (T, 1)
        scale = ops.power(zeta[None, :], power)  # (T, Dh/2)
        scale = ops.concatenate([scale, scale], axis=-1)  # (T, Dh), the rope pair layout
        return scale[None, :, None, :]  # (1, T, 1, Dh)

    def rotate_query(self, q, positions):
        # q: (B, T, H, Dh)
        rotated = ops.cast(super().rotate_query(q, positions), "float32")
        return ops.cast(rotated * self._scale(positions, 1.0), q.dtype)

    def rotate_key(self, k, positions):
        # k: (B, T, Hkv, Dh)
        rotated = ops.cast(super().rotate_query(k, positions), "float32")
        return ops.cast(rotated * self._scale(positions, -1.0), k.dtype)

    def get_config(self):
        config = super().get_config()
        config.pop("scaling_factor", None)
        config.update(scale_base=self.scale_base, gamma=self.gamma)
        return config
