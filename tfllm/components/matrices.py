"""Weights that hold several matrices, for optimizers that treat each matrix whole.

A fused projection (attention's `qkv_proj`, SwiGLU's `gate_up`) is one kernel for speed, but
its columns are separate matrices: q, k and v, or the gate and the up projection. A mixture of
experts stacks one matrix per expert along a leading axis. Muon orthogonalizes each update
matrix (its singular values all set near 1): done over a fused kernel it equalizes the spectrum
of the concatenation, not of each part. A layer that fuses says so with `fused_matrices()`;
`fused_matrices_of(model)` collects the answers by variable path.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras


@dataclasses.dataclass(frozen=True)
class FusedMatrices:
    """How one weight splits into the matrices it holds.

    Args:
        columns: the widths of the column blocks fused along the last axis, in order (they
            sum to the last axis's size).
        stacked: the weight is 3-D, one `(rows, columns)` matrix per index of its first axis.
        head_width: each column block is itself attention heads of this width (an optimizer
            may treat each head as its own matrix); None when the blocks have no heads.

    Example:

    >>> FusedMatrices(columns=(128, 32, 32)).columns
    (128, 32, 32)
    >>> FusedMatrices(columns=(64, 32, 32), head_width=32).blocks(per_head=True)
    (32, 32, 32, 32)
    """

    columns: tuple[int, ...]
    stacked: bool = False
    head_width: int | None = None

    def blocks(self, per_head: bool = False) -> tuple[int, ...]:
        """The column widths of the matrices, each head its own with `per_head`."""
        if not per_head or self.head_width is None:
            return self.columns
        return tuple(self.head_width for c in self.columns for _ in range(c // self.head_width))

    def check(self, shape: tuple[int, ...], path: str) -> None:
        """Raise ValueError unless a weight of `shape` splits this way."""
        if len(shape) != (3 if self.stacked else 2):
            raise ValueError(
                f"{path}: a {'stacked ' if self.stacked else ''}fused weight must be "
                f"{3 if self.stacked else 2}-D, got shape {tuple(shape)}"
            )
        if sum(self.columns) != shape[-1] or min(self.columns) < 1:
            raise ValueError(
                f"{path}: column blocks {self.columns} do not split its last axis of {shape[-1]}"
            )
        if self.head_width is not None and any(c % self.head_width for c in self.columns):
            raise ValueError(
                f"{path}: column blocks {self.columns} are not whole heads of {self.head_width}"
            )


def fused_matrices_of(model: Any) -> dict[str, FusedMatrices]:
    """`{variable path: FusedMatrices}` over every layer of `model` that declares some.

    A layer declares by defining `fused_matrices() -> list[tuple[variable, FusedMatrices]]`;
    each declaration is checked against the variable's shape. A declared kernel that is not a
    variable (a LoRA-adapted `Dense` computes its kernel from frozen weights and the adapter's)
    is skipped: only variables are optimized.
    """
    found: dict[str, FusedMatrices] = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        declare = getattr(layer, "fused_matrices", None)
        if declare is None or not layer.built:
            continue
        for variable, layout in declare():
            if not isinstance(variable, keras.Variable):
                continue
            layout.check(tuple(variable.shape), variable.path)
            found[variable.path] = layout
    return found
