"""Learning-rate schedules (registry kind `schedule`)."""

from __future__ import annotations

import functools
import logging
import math

import keras
from keras import ops

from tfllm.registry import register

log = logging.getLogger(__name__)


@functools.cache
def _warn_once(message: str) -> None:
    log.warning(message)


def _warming(peak_learning_rate: float, warmup_steps: int, step):
    """The linear warmup's rate at `step` (nanoGPT's: `peak * (step + 1) / (warmup + 1)`)."""
    return peak_learning_rate * (step + 1.0) / (warmup_steps + 1.0)


@register("schedule", "cosine")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak_learning_rate`, then cosine decay to `min_learning_rate`.

    Matches nanoGPT: step `s < warmup_steps` gives `peak * (s + 1) / (warmup_steps + 1)`; after
    `decay_steps` the rate stays at `min_learning_rate`. A run too short for its warmup
    (`decay_steps <= warmup_steps`, e.g. `trainer.max_steps=30` with the default 100) warms up
    for a tenth of `decay_steps` instead, with a warning.

    Args:
        peak_learning_rate: float. Rate at the end of warmup.
        warmup_steps: int. Linear warmup length.
        decay_steps: int. Step at which the cosine reaches `min_learning_rate` (usually the
            run's `max_steps`).
        min_learning_rate: float. Final rate.

    Example:

    >>> schedule = WarmupCosine(1e-3, warmup_steps=10, decay_steps=100, min_learning_rate=1e-4)
    >>> round(float(schedule(100)), 6)
    0.0001
    """

    def __init__(
        self,
        peak_learning_rate: float,
        warmup_steps: int,
        decay_steps: int,
        min_learning_rate: float = 0.0,
    ):
        if peak_learning_rate <= 0:
            raise ValueError(f"peak_learning_rate must be positive, got {peak_learning_rate}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if decay_steps <= 0:
            raise ValueError(f"decay_steps must be positive, got {decay_steps}")
        if decay_steps <= warmup_steps:
            shorter = decay_steps // 10
            _warn_once(
                f"schedule: warmup_steps={warmup_steps} is not shorter than decay_steps="
                f"{decay_steps} (the run): warming up for {shorter} steps instead (set "
                "schedule.warmup_steps to choose)"
            )
            warmup_steps = shorter
        if not 0 <= min_learning_rate <= peak_learning_rate:
            raise ValueError(
                f"min_learning_rate must be in [0, peak_learning_rate], got {min_learning_rate}"
            )
        self.peak_learning_rate = peak_learning_rate
        self.warmup_steps = warmup_steps
        self.decay_steps = decay_steps
        self.min_learning_rate = min_learning_rate

    def _share(self, step):
        """How much of `peak - min` is left at `step` after warmup: 1 down to 0."""
        progress = (step - self.warmup_steps) / float(self.decay_steps - self.warmup_steps)
        return 0.5 * (1.0 + ops.cos(math.pi * ops.clip(progress, 0.0, 1.0)))

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = _warming(self.peak_learning_rate, self.warmup_steps, step)
        decayed = self.min_learning_rate + self._share(step) * (
            self.peak_learning_rate - self.min_learning_rate
        )
        return ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps,
            "min_learning_rate": self.min_learning_rate,
        }


@register("schedule", "constant")
class ConstantWithWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak_learning_rate`, then constant.

    Args:
        peak_learning_rate: float. The rate after warmup.
        warmup_steps: int. Linear warmup length (0 for none).

    Example:

    >>> round(float(ConstantWithWarmup(1e-3, warmup_steps=0)(5)), 6)
    0.001
    """

    def __init__(self, peak_learning_rate: float, warmup_steps: int = 0):
        if peak_learning_rate <= 0:
            raise ValueError(f"peak_learning_rate must be positive, got {peak_learning_rate}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.peak_learning_rate = peak_learning_rate
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = _warming(self.peak_learning_rate, self.warmup_steps, step)
        return ops.where(step < self.warmup_steps, warm, self.peak_learning_rate)

    def get_config(self):
        return {"peak_learning_rate": self.peak_learning_rate, "warmup_steps": self.warmup_steps}


@register("schedule", "wsd")
class WarmupStableDecay(WarmupCosine):
    """Linear warmup, constant at `peak_learning_rate`, then a linear cooldown to the minimum.

    The trapezoid of modded-nanogpt's speedruns: the rate holds at its peak until the last
    `cooldown_fraction` of `decay_steps`, then falls linearly to `min_learning_rate` at
    `decay_steps` and stays there. Warmup is as `cosine`'s (`peak * (s + 1) / (warmup_steps + 1)`,
    and a tenth of the run, with a warning, when the run is too short for it). With
    `cooldown_shape="sqrt"` the cooldown follows `1 - sqrt(progress)` instead of `1 - progress`
    (Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training
    Durations"): it leaves the peak faster and spends longer at low rates.

    Args:
        peak_learning_rate: float. Rate from the end of warmup to the cooldown.
        warmup_steps: int. Linear warmup length.
        decay_steps: int. Step at which the cooldown reaches `min_learning_rate` (usually the
            run's `max_steps`).
        cooldown_fraction: float in (0, 1]. Share of `decay_steps` spent cooling down.
        min_learning_rate: float. Final rate.
        cooldown_shape: `"linear"` or `"sqrt"`. How the rate falls over the cooldown.

    Example:

    >>> schedule = WarmupStableDecay(1e-3, warmup_steps=0, decay_steps=100, cooldown_fraction=0.5)
    >>> [round(float(schedule(s)), 6) for s in (10, 50, 75, 100)]
    [0.001, 0.001, 0.0005, 0.0]
    >>> sqrt = WarmupStableDecay(1e-3, 0, 100, cooldown_fraction=0.5, cooldown_shape="sqrt")
    >>> [round(float(sqrt(s)), 6) for s in (50, 75, 100)]
    [0.001, 0.000293, 0.0]
    """

    COOLDOWN_SHAPES = ("linear", "sqrt")

    def __init__(
        self,
        peak_learning_rate: float,
        warmup_steps: int,
        decay_steps: int,
        cooldown_fraction: float = 0.4,
        min_learning_rate: float = 0.0,
        cooldown_shape: str = "linear",
    ):
        super().__init__(peak_learning_rate, warmup_steps, decay_steps, min_learning_rate)
        if not 0 < cooldown_fraction <= 1:
            raise ValueError(f"cooldown_fraction must be in (0, 1], got {cooldown_fraction}")
        if cooldown_shape not in self.COOLDOWN_SHAPES:
            raise ValueError(
                f"cooldown_shape must be one of {list(self.COOLDOWN_SHAPES)}, "
                f"got {cooldown_shape!r}"
            )
        self.cooldown_fraction = cooldown_fraction
        self.cooldown_shape = cooldown_shape

    def _share(self, step):
        # 1 before the cooldown, 0 at decay_steps and after
        cooldown = self.cooldown_fraction * self.decay_steps
        left = ops.clip((self.decay_steps - step) / cooldown, 0.0, 1.0)
        if self.cooldown_shape == "sqrt":
            return 1.0 - ops.sqrt(1.0 - left)
        return left

    def get_config(self):
        return {
            **super().get_config(),
            "cooldown_fraction": self.cooldown_fraction,
            "cooldown_shape": self.cooldown_shape,
        }
