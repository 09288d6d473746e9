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
        neuron_norm: NorMuon's neuron-wise normalization: after orthogonalization each output
            neuron's (kernel column's) update is divided by the root of its running mean
            square, then each matrix is rescaled to its orthogonalized Frobenius norm (so the
            RMS matching applies unchanged). Off: Keras's Muon update.
        neuron_beta_2: decay of that running mean square.
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
        neuron_norm: bool = False,
        neuron_beta_2: float = 0.95,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.fused_matrices = dict(fused_matrices or {})
        self.per_head = per_head
        self.momentum_warmup_steps = momentum_warmup_steps
        self.initial_momentum = initial_momentum
        self.neuron_norm = neuron_norm
        self.neuron_beta_2 = neuron_beta_2
        self._blocks: list[tuple[int, ...] | None] = []
        self._neuron_moments: list[Any] = []

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
            "neuron_norm": self.neuron_norm,
            "neuron_beta_2": self.neuron_beta_2,
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
        self._neuron_moments = [None] * len(var_list)
        if not self.neuron_norm:
            return
        for var in var_list:
            i = self._get_variable_index(var)
            if self.momentums[i] is None or self.adam_velocities[i] is not None:
                continue  # not on Muon
            shape = (*var.shape[:-2], 1, var.shape[-1])  # (..., 1, columns): one per neuron
            self._neuron_moments[i] = self.add_variable(
                shape, initializer="zeros", dtype=var.dtype, name="neuron_moment"
            )

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
        index = self._get_variable_index(variable)
        blocks, moment = self._blocks[index], self._neuron_moments[index]
        if blocks is None and moment is None:
            update = self.lr_adjust(lr * self.zeropower_via_newtonschulz5(g, self.ns_steps))
        else:
            update = lr * self._orthogonalized(g, blocks or (int(g.shape[-1]),), moment)
        self.assign_sub(variable, update)

    def _orthogonalized(self, g: Any, blocks: tuple[int, ...], moment: Any = None) -> Any:
        """Each column block of `g` `(..., rows, sum(blocks))` orthogonalized, neuron-normalized
        when `moment` (the running mean square per column) is given, and RMS-scaled.

        Equal blocks (the heads of a fused projection, q, k and v without grouped queries,
        SwiGLU's gate and up) go through one batched Newton–Schulz; unequal ones one by one.
        """
        if len(blocks) > 1 and len(set(blocks)) == 1:
            return self._orthogonalized_together(g, len(blocks), moment)
        ns = self.ns_steps
        cuts = list(itertools.accumulate(blocks[:-1]))
        parts = ops.split(g, cuts, axis=-1) if cuts else [g]  # (..., rows, block_i) each
        ortho = [self.zeropower_via_newtonschulz5(p, ns) for p in parts]
        if moment is not None:
            ortho = self._neuron_normalized(ortho, cuts, moment)
        updates = [self._rms_scaled(o) for o in ortho]
        return updates[0] if len(updates) == 1 else ops.concatenate(updates, axis=-1)

    def _orthogonalized_together(self, g: Any, count: int, moment: Any = None) -> Any:
        """`_orthogonalized` for `count` equal column blocks, as one batch of matrices."""
        *lead, rows, columns = g.shape
        width = columns // count

        def as_batch(x: Any) -> Any:  # (..., rows, columns) -> (..., count, rows, width)
            return ops.moveaxis(ops.reshape(x, (*lead, rows, count, width)), -2, -3)

        def as_columns(x: Any) -> Any:  # (..., count, rows, width) -> (..., rows, columns)
            return ops.reshape(ops.moveaxis(x, -3, -2), (*lead, rows, columns))

        o = self.zeropower_via_newtonschulz5(as_batch(g), self.ns_steps)  # each block alone
        if moment is not None:
            o = _with_norm_of(as_batch(self._neuron_divided(as_columns(o), moment)), o)
        return as_columns(self._rms_scaled(o))

    def _neuron_normalized(self, parts: list[Any], cuts: list[int], moment: Any) -> list[Any]:
        """NorMuon's step on the orthogonalized blocks `(..., rows, block_i)`: each column
        divided by the root of its running mean square, each block then rescaled to its
        Frobenius norm before the division."""
        o = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)
        scaled = self._neuron_divided(o, moment)
        pieces = ops.split(scaled, cuts, axis=-1) if cuts else [scaled]
        return [_with_norm_of(q, p) for p, q in zip(parts, pieces, strict=True)]

    def _neuron_divided(self, o: Any, moment: Any) -> Any:
        """Each column of `o` `(..., rows, columns)` divided by the root of its running mean
        square `moment` `(..., 1, columns)`, which this step updates first."""
        square = ops.mean(ops.square(o), axis=-2, keepdims=True)  # (..., 1, columns)
        self.assign_add(moment, (1.0 - self.neuron_beta_2) * (square - moment))
        return o / (ops.sqrt(moment) + self.epsilon)

    def _rms_scaled(self, x: Any) -> Any:
        """Keras's `lr_adjust` (Moonlight's RMS matching) on the last two axes of `x`."""
        if self.rms_rate is None:
            return x
        return x * (max(x.shape[-2], x.shape[-1]) ** 0.5 * self.rms_rate)


def _with_norm_of(x: Any, reference: Any) -> Any:
    """Each matrix of `x` (last two axes) rescaled to the Frobenius norm of its counterpart
    in `reference`."""
    return x * (_frobenius(reference) / (_frobenius(x) + 1e-12))


def _frobenius(x: Any) -> Any:
    """The Frobenius norm of each matrix (last two axes) of `x`, kept as `(..., 1, 1)`."""
    return ops.sqrt(ops.sum(ops.square(x), axis=(-2, -1), keepdims=True))
