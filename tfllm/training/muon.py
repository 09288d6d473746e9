"""Keras's Muon, orthogonalizing each matrix of a fused or stacked weight on its own."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any

import keras
from keras import ops

from tfllm.components.matrices import FusedMatrices


class Muon(keras.optimizers.Muon):
    """`keras.optimizers.Muon` that knows which weights hold several matrices.

    Keras's Muon orthogonalizes the whole update of every 2-D weight and leaves every other
    weight to its AdamW. A fused projection (q, k and v in one kernel; SwiGLU's gate and up)
    is several matrices side by side, and a mixture of experts' 3-D weight is one matrix per
    expert: here each of those matrices is orthogonalized, and scaled to the update RMS, on its
    own, as in the reference Muon, whose q, k and v are separate weights. Weights without a
    declaration are updated exactly as Keras's Muon updates them.

    Args:
        fused_matrices: `{variable path: FusedMatrices}` (`fused_matrices_of(model)`); paths
            not in it are plain matrices.
        **kwargs: `keras.optimizers.Muon`'s arguments.

    Example:

    >>> import numpy as np
    >>> w = keras.Variable(np.ones((4, 6), "float32"), name="qkv")
    >>> opt = Muon(learning_rate=0.1, fused_matrices={w.path: FusedMatrices((2, 2, 2))})
    >>> opt.apply([np.eye(4, 6, dtype="float32")], [w])
    >>> w.shape
    (4, 6)
    """

    def __init__(self, fused_matrices: Mapping[str, FusedMatrices] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.fused_matrices = dict(fused_matrices or {})
        self._layouts: list[FusedMatrices | None] = []

    def _should_use_adamw(self, variable: Any) -> bool:
        layout = self.fused_matrices.get(variable.path)
        if layout is not None and layout.stacked:  # Keras would send every 3-D weight to AdamW
            return any(re.search(k, variable.path) for k in self.exclude_layers)
        return super()._should_use_adamw(variable)

    def build(self, var_list: list[Any]) -> None:
        if self.built:
            return
        super().build(var_list)
        self._layouts = [self.fused_matrices.get(v.path) for v in var_list]

    def _muon_update_step(self, gradient: Any, variable: Any, lr: Any, m: Any) -> None:
        layout = self._layouts[self._get_variable_index(variable)]
        if layout is None:
            return super()._muon_update_step(gradient, variable, lr, m)
        self.assign_add(m, ops.add(gradient, m * (self.momentum - 1)))
        g = ops.add(gradient, self.momentum * m) if self.nesterov else m
        cuts = list(itertools.accumulate(layout.columns[:-1]))
        parts = ops.split(g, cuts, axis=-1) if cuts else [g]  # (..., rows, columns_i) each
        updates = [
            self._rms_scaled(self.zeropower_via_newtonschulz5(p, self.ns_steps)) for p in parts
        ]
        update = updates[0] if len(updates) == 1 else ops.concatenate(updates, axis=-1)
        self.assign_sub(variable, lr * update)

    def _rms_scaled(self, x: Any) -> Any:
        """Keras's `lr_adjust` (Moonlight's RMS matching) on the last two axes of `x`."""
        if self.rms_rate is None:
            return x
        return x * (max(x.shape[-2], x.shape[-1]) ** 0.5 * self.rms_rate)
