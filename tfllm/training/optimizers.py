"""Optimizers (registry kind `optimizer`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import keras

from tfllm.registry import register

DEFAULT_NO_DECAY = ("bias", "norm", "embedding")


def no_decay_variables(variables: Sequence[Any], patterns: Sequence[str]) -> list[Any]:
    """Variables whose path matches any regular expression in `patterns`."""
    compiled = [re.compile(p) for p in patterns]
    return [v for v in variables if any(c.search(v.path) for c in compiled)]


@register("optimizer", "adamw")
def adamw(
    learning_rate: Any,
    weight_decay: float = 0.1,
    beta_1: float = 0.9,
    beta_2: float = 0.95,
    epsilon: float = 1e-8,
    exclude_from_weight_decay: Sequence[str] = DEFAULT_NO_DECAY,
    variables: Sequence[Any] = (),
) -> keras.optimizers.Optimizer:
    """AdamW with decoupled weight decay; norms, biases and embeddings are not decayed.

    Args:
        learning_rate: float or schedule (set by the trainer from the `schedule` group).
        weight_decay: float. Decoupled decay coefficient.
        beta_1: float. First-moment decay.
        beta_2: float. Second-moment decay.
        epsilon: float. Numerical floor.
        exclude_from_weight_decay: regular expressions matched against variable paths
            (e.g. `block_0/attention_norm/gamma`); matching variables are not decayed.
        variables: the model's trainable variables (set by the trainer).

    Example:

    >>> opt = adamw(1e-3, weight_decay=0.1)
    >>> type(opt).__name__
    'AdamW'

    Reference: Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization".
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    for name, beta in (("beta_1", beta_1), ("beta_2", beta_2)):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {beta}")
    opt = keras.optimizers.AdamW(
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
    )
    excluded = no_decay_variables(variables, list(exclude_from_weight_decay))
    if excluded:
        opt.exclude_from_weight_decay(var_list=excluded)
    return opt
