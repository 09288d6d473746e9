"""Scaling laws: Chinchilla's compute-optimal allocation, and fitting your own law to a sweep."""

from __future__ import annotations

import glob
import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfllm.registry import ConfigError


@dataclass(frozen=True)
class ParametricLaw:
    """`L(N, D) = E + A / N**alpha + B / D**beta` (N parameters, D training tokens)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, n: float, d: float) -> float:
        return self.E + self.A / n**self.alpha + self.B / d**self.beta

    def compute_optimal(self, compute: float) -> tuple[float, float]:
        """`(N, D)` minimizing `L` under `C = 6 N D` (Hoffmann et al. 2022, eq. 4)."""
        if compute <= 0:
            raise ConfigError(f"compute must be a positive number of FLOPs, got {compute}")
        a, b = self.beta / (self.alpha + self.beta), self.alpha / (self.alpha + self.beta)
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))
        return g * (compute / 6) ** a, (compute / 6) ** b / g


# Hoffmann et al. 2022 ("Training Compute-Optimal Large Language Models"), approach 3.
CHINCHILLA = ParametricLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def chinchilla(compute: float, law: ParametricLaw = CHINCHILLA) -> dict[str, float]:
    """Compute-optimal parameters and tokens for `compute` FLOPs, and the law's loss there."""
    n, d = law.compute_optimal(compute)
    return {
        "compute_flops": compute,
        "params": n,
        "tokens": d,
        "tokens_per_param": d / n,
        "expected_loss": law.loss(n, d),
    }


@dataclass
class SweepPoint:
    """One finished run of a sweep."""

    run_dir: str
    params: int
    tokens: int
    loss: float


@dataclass
class PowerLawFit:
    """`L(N) = E + A / N**alpha`, fitted to runs that share a token budget (or to each run's
    final loss when the budget varies, which folds D into the fit).

    Attributes:
        E, A, alpha: the fitted constants.
        points: the runs.
        residual_rmse: root-mean-square error of the fit on the points.
    """

    E: float
    A: float
    alpha: float
    points: list[SweepPoint]
    residual_rmse: float

    def loss(self, n: float) -> float:
        return self.E + self.A / n**self.alpha

    def as_dict(self) -> dict[str, Any]:
        return {
            "law": "L(N) = E + A / N^alpha",
            "E": self.E,
            "A": self.A,
            "alpha": self.alpha,
            "residual_rmse": self.residual_rmse,
            "points": [p.__dict__ for p in self.points],
        }


def count_parameters(run_dir: str) -> int:
    """Trainable parameters of a run's model (built from its config, not trained)."""
    from tfllm.components.tokenizers.base import load_tokenizer
    from tfllm.models.builder import build_model
    from tfllm.runs import load_run_config, tokenizer_dir

    cfg = load_run_config(run_dir)
    tokenizer = load_tokenizer(tokenizer_dir(run_dir))
    model = build_model(cfg, tokenizer.vocabulary_size)
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def read_sweep(sweep_dir: str, metric: str = "val_loss") -> list[SweepPoint]:
    """Every run under `sweep_dir` (a Hydra multirun folder) with a `metrics.json`.

    Tokens are `steps × data.batch_size × data.sequence_length`.
    """
    from tfllm.runs import METRICS_FILE, load_run_config

    points = []
    for metrics_path in sorted(
        glob.glob(os.path.join(sweep_dir, "**", METRICS_FILE), recursive=True)
    ):
        run_dir = os.path.dirname(metrics_path)
        with open(metrics_path, encoding="utf-8") as f:
            metrics = json.load(f)
        if metric not in metrics:
            raise ConfigError(f"{metrics_path}: no '{metric}' (it has {sorted(metrics)})")
        cfg = load_run_config(run_dir)
        tokens = int(metrics["step"]) * cfg["data"]["batch_size"] * cfg["data"]["sequence_length"]
        points.append(
            SweepPoint(run_dir, count_parameters(run_dir), tokens, float(metrics[metric]))
        )
    if len(points) < 3:
        raise ConfigError(
            f"sweep_dir={sweep_dir}: {len(points)} finished runs with metrics.json; a power law "
            "with an offset needs at least 3 model sizes"
        )
    return points


def fit_power_law(points: list[SweepPoint]) -> PowerLawFit:
    """Least-squares fit of `L(N) = E + A / N**alpha` (scipy's `curve_fit`, in log-N space)."""
    from scipy.optimize import OptimizeWarning, curve_fit

    n = np.asarray([p.params for p in points], dtype=np.float64)
    loss = np.asarray([p.loss for p in points], dtype=np.float64)
    scale = float(np.median(n))

    def law(x, e, log_a, alpha):
        return e + np.exp(log_a) * (x / scale) ** (-alpha)

    start = (
        max(0.0, float(loss.min()) - 0.5),
        math.log(max(float(loss.max() - loss.min()), 1e-3) + 0.5),
        0.3,
    )
    try:
        with warnings.catch_warnings():
            # With as few runs as parameters scipy cannot estimate the covariance, which is
            # not used here: its OptimizeWarning says nothing about the fit itself.
            warnings.simplefilter("ignore", OptimizeWarning)
            (e, log_a, alpha), _ = curve_fit(
                law,
                n,
                loss,
                p0=start,
                bounds=([0.0, -20.0, 0.0], [float(loss.min()), 20.0, 3.0]),
                maxfev=20000,
            )
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"the power law did not fit these {len(points)} runs: {err}") from None
    rmse = float(np.sqrt(np.mean((law(n, e, log_a, alpha) - loss) ** 2)))
    a = float(np.exp(log_a) * scale**alpha)
    return PowerLawFit(float(e), a, float(alpha), points, rmse)


def plot_fit(fit: PowerLawFit, path: str, title: str = "") -> str:
    """Draw the runs and the fitted law on log-scaled N; write a PNG to `path`."""
    from tfllm.evaluation.plotting import pyplot

    plt = pyplot()

    n = np.asarray([p.params for p in fit.points], dtype=np.float64)
    loss = np.asarray([p.loss for p in fit.points])
    grid = np.geomspace(n.min() / 2, n.max() * 4, 200)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.scatter(n, loss, color="C0", zorder=3, label="runs")
    ax.plot(
        grid,
        [fit.loss(x) for x in grid],
        color="C1",
        label=f"L(N) = {fit.E:.3f} + {fit.A:.3g} / N^{fit.alpha:.3f}",
    )
    ax.axhline(fit.E, color="gray", linestyle=":", linewidth=1, label=f"E = {fit.E:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("validation loss")
    ax.set_title(title or "scaling law fit")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
