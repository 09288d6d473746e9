"""`tfllm.train(...)` and `tfllm.evaluate(...)`: the CLI's jobs from Python, composed from the
same Hydra overrides."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def compose_overrides(
    config_name: str, overrides: Sequence[str], subdir: str | None = None
) -> dict[str, Any]:
    """The config `tfllm <command> overrides...` composes, resolved, as a plain dict."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tfllm.config import config_dir, to_plain, with_plugin_search_path

    path = config_dir() if subdir is None else os.path.join(config_dir(), subdir)
    overrides = with_plugin_search_path(overrides) if subdir is None else list(overrides)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=path, version_base="1.3"):
        return to_plain(compose(config_name, overrides=list(overrides)))


@dataclass(frozen=True)
class TrainResult:
    """What `train` did.

    Attributes:
        run_dir: the run directory (`tfllm.load(run_dir)` loads the model).
        metrics: the final logs (`loss`, `val_loss`, ...), as `metrics.json` holds them.
    """

    run_dir: str
    metrics: dict[str, float]


def train(*overrides: str, run_dir: str | None = None) -> TrainResult:
    """Train as `tfllm train overrides... run_dir=...` would (and resume the run in `run_dir`
    if it has checkpoints).

    Args:
        overrides: Hydra overrides, as on the command line (`"attention=gqa"`,
            `"trainer.max_steps=200"`).
        run_dir: where the run goes (default `runs/<date>/<time>`, as the CLI names it).

    Example:

    >>> import tfllm
    >>> result = tfllm.train("trainer.max_steps=20", run_dir="runs/nb")  # doctest: +SKIP
    >>> tfllm.load(result.run_dir).generate("ROMEO:")  # doctest: +SKIP
    """
    from tfllm.training.trainer import Trainer

    run_dir = run_dir or os.path.join("runs", time.strftime("%Y-%m-%d"), time.strftime("%H-%M-%S"))
    cfg = compose_overrides("config", [*overrides, f"run_dir={run_dir}"])
    cfg.pop("run_dir")
    logs = Trainer(cfg, run_dir).fit()
    return TrainResult(run_dir, {k: float(v) for k, v in logs.items()})


def evaluate(ckpt: str, *overrides: str) -> dict[str, Any]:
    """Evaluate as `tfllm evaluate ckpt=... overrides...` would; returns its JSON result.

    Example:

    >>> import tfllm
    >>> tfllm.evaluate("runs/default", "eval=perplexity", "data.path=valid.txt")  # doctest: +SKIP
    """
    from tfllm.evaluation.runner import evaluate as run_evaluation
    from tfllm.runs import load_run

    cfg = compose_overrides("evaluate", [f"ckpt={ckpt}", *overrides], subdir="_evaluate")
    model, tokenizer, run_cfg = load_run(ckpt)
    result = run_evaluation(model, tokenizer, cfg, run_cfg)
    result["ckpt"] = ckpt
    return result
