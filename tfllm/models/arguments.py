"""Argument checks the backbones share."""

from __future__ import annotations


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
