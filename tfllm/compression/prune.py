"""Magnitude pruning: zero the smallest weights, globally or per layer, and keep them zero."""

from __future__ import annotations

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
