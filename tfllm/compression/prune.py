"""Magnitude pruning: zero the smallest weights, globally or per layer, and keep them zero."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfllm.registry import ConfigError

SCOPES = ("global", "layer")
# Dense kernels (attention projections, FFNs, an untied head) and mixture-of-experts weights.
# Embeddings, norms and biases are left dense by default.
DEFAULT_TARGETS = (r"/kernel$", r"/expert_(in|out)$")


def check_pruning(spec: dict[str, Any]) -> dict[str, Any]:
    """The `pruning` config block with defaults, or a ConfigError naming the bad key."""
    spec = dict(spec)
    sparsity = spec.pop("sparsity", None)
    scope = spec.pop("scope", "global")
    targets = spec.pop("targets", None) or list(DEFAULT_TARGETS)
    if spec:
        raise ConfigError(
            f"pruning.{sorted(spec)[0]}: unknown key; valid keys: sparsity, scope, targets"
        )
    if not isinstance(sparsity, int | float) or not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"pruning.sparsity must be a fraction in [0, 1), got {sparsity!r}")
    if scope not in SCOPES:
        raise ConfigError(f"pruning.scope must be one of {SCOPES}, got {scope!r}")
    for t in targets:
        try:
            re.compile(t)
        except re.error as e:
            raise ConfigError(f"pruning.targets: {t!r} is not a regular expression ({e})") from None
    return {"sparsity": float(sparsity), "scope": scope, "targets": [str(t) for t in targets]}


def prunable_weights(model: Any, targets: Sequence[str] = DEFAULT_TARGETS) -> list[Any]:
    """The floating-point weights of `model` (2-D or more) whose path matches a target."""
    patterns = [re.compile(t) for t in targets]
    chosen = [
        w
        for w in model.weights
        if len(w.shape) >= 2 and "float" in str(w.dtype) and any(p.search(w.path) for p in patterns)
    ]
    if not chosen:
        raise ConfigError(
            f"pruning.targets {list(targets)} match no weight of the model "
            f"(its weights: {', '.join(w.path for w in model.weights[:6])}, ...)"
        )
    return chosen


def magnitude_masks(
    values: Sequence[np.ndarray], sparsity: float, scope: str = "global"
) -> list[np.ndarray]:
    """Keep-masks (float 0/1) that zero exactly `round(sparsity * n)` smallest-magnitude
    entries: of all `values` together (`global`) or of each array alone (`layer`)."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    groups = [list(values)] if scope == "global" else [[v] for v in values]
    masks: list[np.ndarray] = []
    for group in groups:
        flat = np.concatenate([np.abs(np.asarray(v, np.float64)).ravel() for v in group])
        k = int(round(sparsity * flat.size))
        keep = np.ones(flat.size, np.float32)
        if k:
            keep[np.argpartition(flat, k - 1)[:k]] = 0.0
        start = 0
        for v in group:
            masks.append(keep[start : start + v.size].reshape(v.shape))
            start += v.size
    return masks


def prune_model(
    model: Any, sparsity: float, scope: str = "global", targets: Sequence[str] = DEFAULT_TARGETS
) -> dict[str, np.ndarray]:
    """Zero the smallest weights of `model` in place; returns `{weight path: keep-mask}`."""
    weights = prunable_weights(model, targets)
    masks = magnitude_masks([w.numpy() for w in weights], sparsity, scope)
    for w, m in zip(weights, masks, strict=True):
        w.assign(w.numpy() * m.astype(w.dtype))
    return {w.path: m for w, m in zip(weights, masks, strict=True)}


def sparsity_of(model: Any, targets: Sequence[str] = DEFAULT_TARGETS) -> tuple[float, dict]:
    """The share of exact zeros over the target weights, and per weight."""
    weights = prunable_weights(model, targets)
    per = {w.path: float(np.mean(w.numpy() == 0)) for w in weights}
    total = sum(int(np.prod(w.shape)) for w in weights)
    zeros = sum(per[w.path] * int(np.prod(w.shape)) for w in weights)
    return zeros / total, per


def prune_run(
    ckpt: str,
    out: str,
    sparsity: float,
    scope: str = "global",
    targets: Sequence[str] | None = None,
    finetune_steps: int = 0,
    learning_rate: float = 1e-4,
    overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """`tfllm prune`: prune a run's weights by magnitude into `out`, then optionally fine-tune.

    Without fine-tuning `out` is a checkpoint directory like `tfllm convert`'s. With
    `finetune_steps` it is a training run: the source's config with `init_from=ckpt`,
    `pruning` set (the trainer prunes at step 0 and keeps the zeros), a constant learning rate
    and `finetune_steps` steps; `overrides` (`{"data": {...}}`) replace whole config blocks,
    for a converted checkpoint that carries no data config. Running the same command again
    resumes an interrupted fine-tune.
    """
    from tfllm.config import load_run_config
    from tfllm.runs import load_run, write_run

    spec = check_pruning({"sparsity": sparsity, "scope": scope, "targets": targets})
    if finetune_steps < 0:
        raise ConfigError(f"finetune_steps must be >= 0, got {finetune_steps}")
    resuming = finetune_steps and os.path.exists(os.path.join(out, "config.yaml"))
    if os.path.exists(out) and os.listdir(out) and not (overwrite or resuming):
        raise FileExistsError(f"out: {out} exists and is not empty (pass overwrite=true)")
    if not finetune_steps:
        model, tokenizer, cfg = load_run(ckpt)
        prune_model(model, **spec)
        write_run(model, tokenizer, {**cfg, "pruning": spec}, out, overwrite)
        total, _ = sparsity_of(model, spec["targets"])
        return {"sparsity": total, "run_dir": out}
    from tfllm.training.trainer import Trainer

    cfg = load_run_config(ckpt)
    cfg.update(overrides or {})
    cfg["init_from"] = os.path.abspath(ckpt)
    cfg["pruning"] = spec
    cfg["schedule"] = {"name": "constant", "peak_learning_rate": learning_rate, "warmup_steps": 0}
    every = max(1, min(finetune_steps, 250))
    cfg["trainer"] = {
        **cfg["trainer"],
        "max_steps": finetune_steps,
        "eval_every": every,
        "checkpoint_every": every,
        "resume": "auto",
    }
    trainer = Trainer(cfg, out)
    logs = trainer.fit()
    total, _ = sparsity_of(trainer.model, spec["targets"])
    return {"sparsity": total, "run_dir": out, "val_loss": logs.get("val_loss")}
