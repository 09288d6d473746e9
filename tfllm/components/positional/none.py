"""No positional information (for models that rely on causal masking alone, or for ablations)."""

from __future__ import annotations

from tfllm.components.positional.base import PositionalEncoding
from tfllm.registry import register


@register("positional", "none")
class NoPositionalEncoding(PositionalEncoding):
    """Adds no positional information: every hook is the identity.

    Args:
        **kwargs: Passed to `keras.layers.Layer`.

    Example:

    >>> import numpy as np
    >>> layer = NoPositionalEncoding()
    >>> layer(np.ones((1, 4, 8), "float32")).shape
    TensorShape([1, 4, 8])

    Reference: Haviv et al. 2022, "Transformer Language Models without Positional Encodings
    Still Learn Positional Information".
    """
