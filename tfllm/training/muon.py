"""Keras's Muon, orthogonalizing each matrix of a fused or stacked weight on its own."""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Mapping
from typing import Any

import keras
from keras import ops

from tfllm.components.matrices import FusedMatrices


@keras.saving.register_keras_serializable(package="tfllm")
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
        per_head: orthogonalize each attention head of a fused projection on its own (the
            blocks a `FusedMatrices` marks with `head_width`), not each of q, k and v.
        momentum_warmup_steps: over this many steps the momentum rises linearly from
            `initial_momentum` to `momentum` (modded-nanogpt's 0.85 to 0.95); 0 keeps it fixed.
        initial_momentum: the momentum at step 0 of the warmup.
        **kwargs: `keras.optimizers.Muon`'s arguments.

    Example:

    >>> import numpy as np
    >>> w = keras.Variable(np.ones((4, 6), "float32"), name="qkv")
    >>> opt = Muon(learning_rate=0.1, fused_matrices={w.path: FusedMatrices((2, 2, 2))})
    >>> _ = opt.apply([np.eye(4, 6, dtype="float32")], [w])
    >>> [round(float(x), 3) for x in w.numpy()[0]]  # each 4 x 2 block orthogonalized alone
    [0.955, 1.0, 1.0, 1.0, 1.0, 1.0]
    """

    def __init__(
        self,
        fused_matrices: Mapping[str, FusedMatrices] | None = None,
        per_head: bool = False,
        momentum_warmup_steps: int = 0,
        initial_momentum: float = 0.85,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.fused_matrices = dict(fused_matrices or {})
        self.per_head = per_head
        self.momentum_warmup_steps = momentum_warmup_steps
        self.initial_momentum = initial_momentum
        self._blocks: list[tuple[int, ...] | None] = []

    def get_config(self) -> dict[str, Any]:
        """Keras's Muon's config plus this class's arguments (`fused_matrices` as plain values)."""
        return {
            **super().get_config(),
            "fused_matrices": {
                path: dataclasses.asdict(layout) for path, layout in self.fused_matrices.items()
            },
            "per_head": self.per_head,
            "momentum_warmup_steps": self.momentum_warmup_steps,
            "initial_momentum": self.initial_momentum,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> Muon:
        config = dict(config)
        fused = config.pop("fused_matrices", None) or {}
        # `get_config`'s `dataclasses.asdict`, back (JSON turns the columns tuple into a list).
        layouts = {
            path: FusedMatrices(**{**f, "columns": tuple(f["columns"])})
            for path, f in fused.items()
        }
        return super().from_config({**config, "fused_matrices": layouts}, custom_objects)

    def _should_use_adamw(self, variable: Any) -> bool:
        layout = self.fused_matrices.get(variable.path)
        if layout is not None and layout.stacked:  # Keras would send every 3-D weight to AdamW
            return any(re.search(k, variable.path) for k in self.exclude_layers)
        return super()._should_use_adamw(variable)

    def build(self, var_list: list[Any]) -> None:
        if self.built:
            return
        super().build(var_list)
        layouts = [self.fused_matrices.get(v.path) for v in var_list]
        self._blocks = [None if f is None else f.blocks(self.per_head) for f in layouts]

    def _momentum_now(self) -> Any:
        """`momentum`, or during the warmup its linear ramp from `initial_momentum`."""
        if not self.momentum_warmup_steps:
            return self.momentum
        done = ops.minimum(ops.cast(self.iterations, "float32") / self.momentum_warmup_steps, 1.0)
        return self.initial_momentum + (self.momentum - self.initial_momentum) * done

    def _muon_update_step(self, gradient: Any, variable: Any, lr: Any, m: Any) -> None:
        # Keras's step, with the momentum of this step and fused weights split into matrices.
        mu = self._momentum_now()
        self.assign_add(m, ops.add(gradient, m * (mu - 1)))
        g = ops.add(gradient, mu * m) if self.nesterov else m
        blocks = self._blocks[self._get_variable_index(variable)]
        if blocks is None:
            update = self.lr_adjust(lr * self.zeropower_via_newtonschulz5(g, self.ns_steps))
        else:
            update = lr * self._orthogonalized(g, blocks)
        self.assign_sub(variable, update)

    def _orthogonalized(self, g: Any, blocks: tuple[int, ...]) -> Any:
        """Each column block of `g` `(..., rows, sum(blocks))` orthogonalized and RMS-scaled.

        (One batched Newton–Schulz over equal blocks, reshaped, measured slower under XLA on
        CPU than these separate ones: the transposes cost more than the launches they save.)
        """
        ns = self.ns_steps
        cuts = list(itertools.accumulate(blocks[:-1]))
        parts = ops.split(g, cuts, axis=-1) if cuts else [g]  # (..., rows, block_i) each
        updates = [self._rms_scaled(self.zeropower_via_newtonschulz5(p, ns)) for p in parts]
        return updates[0] if len(updates) == 1 else ops.concatenate(updates, axis=-1)

    def _rms_scaled(self, x: Any) -> Any:
        """Keras's `lr_adjust` (Moonlight's RMS matching) on the last two axes of `x`."""
        if self.rms_rate is None:
            return x
        return x * (max(x.shape[-2], x.shape[-1]) ** 0.5 * self.rms_rate)
