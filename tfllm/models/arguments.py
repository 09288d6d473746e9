"""Argument checks the backbones share."""

from __future__ import annotations

import math


def check_backbone_arguments(dropout: float, **sizes: int) -> None:
    """Raise `ValueError` naming the first of `sizes` that is not a positive integer, or a
    `dropout` outside [0, 1).

    Example:

    >>> check_backbone_arguments(0.1, num_layers=2, hidden_dim=16)
    >>> check_backbone_arguments(0.0, num_layers=0)
    Traceback (most recent call last):
    ...
    ValueError: num_layers must be a positive integer, got 0
    """
    for key, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def derived_sizes(
    hidden_dim: int,
    num_heads: int,
    intermediate_dim: int | None = None,
    head_dim: int | None = None,
) -> tuple[int, int]:
    """`(head_dim, intermediate_dim)` of a backbone: the attention spec's `head_dim` or
    `hidden_dim // num_heads`, and the FFN width or `4 * hidden_dim`. The one place that
    derives them (backbones and config validation alike).

    Example:

    >>> derived_sizes(128, 4)
    (32, 512)
    >>> derived_sizes(128, 4, intermediate_dim=344, head_dim=64)
    (64, 344)
    """
    return head_dim or hidden_dim // num_heads, intermediate_dim or 4 * hidden_dim


def residual_output_range(
    initializer_range: float, num_layers: int, scaled: bool = False, zero: bool = False
) -> float | None:
    """Standard deviation for the projections that write into the residual stream (attention
    `out_proj`, the FFN's down projection), offered to the blocks as `output_initializer_range`:
    None (the blocks use `initializer_range`), `initializer_range / sqrt(2 * num_layers)`
    (`scaled`: GPT-2, nanoGPT) or 0 (`zero`: modded-nanogpt; every block starts as the
    identity and its output projections learn from the first step).

    Example:

    >>> residual_output_range(0.02, 8) is None
    True
    >>> residual_output_range(0.02, 8, scaled=True)
    0.005
    >>> residual_output_range(0.02, 8, zero=True)
    0.0
    >>> residual_output_range(0.02, 8, scaled=True, zero=True)
    Traceback (most recent call last):
    ...
    ValueError: scaled_residual_init and zero_residual_init are both true; set at most one
    """
    for name, value in (("scaled_residual_init", scaled), ("zero_residual_init", zero)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
    if scaled and zero:
        raise ValueError(
            "scaled_residual_init and zero_residual_init are both true; set at most one"
        )
    if zero:
        return 0.0
    return initializer_range / math.sqrt(2 * num_layers) if scaled else None
