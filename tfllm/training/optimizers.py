"""Optimizers (registry kind `optimizer`)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import keras

from tfllm.components.matrices import FusedMatrices
from tfllm.registry import register
from tfllm.training.muon import Muon

DEFAULT_NO_DECAY = ("bias", "norm", "embedding", "skip_weights")


def no_decay_variables(variables: Sequence[Any], patterns: Sequence[str]) -> list[Any]:
    """Variables whose path matches any regular expression in `patterns`."""
    compiled = [re.compile(p) for p in patterns]
    return [v for v in variables if any(c.search(v.path) for c in compiled)]


def _check_adam_arguments(weight_decay: float, beta_1: float, beta_2: float) -> None:
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    for name, beta in (("beta_1", beta_1), ("beta_2", beta_2)):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {beta}")


def _without_decay(
    opt: keras.optimizers.Optimizer, variables: Sequence[Any], patterns: Sequence[str]
) -> keras.optimizers.Optimizer:
    """`opt`, told not to decay the variables whose path matches `patterns`."""
    excluded = no_decay_variables(variables, list(patterns))
    if excluded:
        opt.exclude_from_weight_decay(var_list=excluded)
    return opt


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
    _check_adam_arguments(weight_decay, beta_1, beta_2)
    opt = keras.optimizers.AdamW(
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
    )
    return _without_decay(opt, variables, exclude_from_weight_decay)


# Variables Muon leaves to its AdamW: embeddings (also the tied LM head), norms, biases and an
# untied output head (`lm_head/`, a task's `head/`; modded-nanogpt keeps these on Adam).
DEFAULT_ADAMW_FOR = ("embedding", "norm", "bias", "head/")


@register("optimizer", "muon")
def muon(
    learning_rate: Any,
    momentum: float = 0.95,
    momentum_warmup_steps: int = 0,
    initial_momentum: float = 0.85,
    nesterov: bool = True,
    ns_steps: int = 5,
    rms_rate: float = 0.2,
    weight_decay: float = 0.1,
    beta_1: float = 0.9,
    beta_2: float = 0.95,
    epsilon: float = 1e-8,
    adam_lr_ratio: float = 1.0,
    adamw_for: Sequence[str] = DEFAULT_ADAMW_FOR,
    exclude_from_weight_decay: Sequence[str] = DEFAULT_NO_DECAY,
    split_fused: bool = True,
    per_head: bool = False,
    neuron_norm: bool = False,
    neuron_beta_2: float = 0.95,
    variables: Sequence[Any] = (),
    fused_matrices: Mapping[str, FusedMatrices] | None = None,
) -> keras.optimizers.Optimizer:
    """Muon for the hidden weight matrices, AdamW for the rest (`keras.optimizers.Muon`).

    Muon orthogonalizes each 2-D weight's momentum update with a few Newton–Schulz iterations;
    embeddings, norms, biases, the output head and any other variable that is not a matrix
    (or whose path matches `adamw_for`) take the AdamW update instead. With `split_fused`, a
    fused projection's parts (q, k, v; gate, up) and a mixture of experts' per-expert matrices
    are each orthogonalized on their own (`tfllm.training.muon.Muon`); without it a fused
    kernel is one matrix and 3-D expert weights go to AdamW, as in Keras's Muon.

    Args:
        learning_rate: float or schedule (set by the trainer from the `schedule` group).
        momentum: float. Muon's momentum.
        momentum_warmup_steps: int. Steps over which Muon's momentum rises linearly from
            `initial_momentum` to `momentum` (modded-nanogpt: 300 steps from 0.85); 0 keeps it.
        initial_momentum: float. Muon's momentum at the first step of that warmup.
        nesterov: bool. Nesterov momentum for Muon.
        ns_steps: int. Newton–Schulz iterations per update.
        rms_rate: float. Muon's update is scaled to this RMS (Keras's matching of AdamW's
            update size, so both parts share one learning rate); 0 keeps the raw scale.
        weight_decay: float. Decoupled decay for both parts.
        beta_1: float. AdamW's first-moment decay (the same key as `optimizer=adamw`'s).
        beta_2: float. AdamW's second-moment decay.
        epsilon: float. AdamW's numerical floor.
        adam_lr_ratio: float. AdamW's learning rate as a share of Muon's.
        adamw_for: regular expressions on variable paths that take AdamW even when 2-D.
        exclude_from_weight_decay: regular expressions on variable paths not decayed.
        split_fused: bool. Orthogonalize each matrix of a fused or stacked weight on its own.
        per_head: bool. With `split_fused`, orthogonalize each attention head of a fused
            q, k, v projection on its own instead of each of q, k and v.
        neuron_norm: bool. NorMuon: each output neuron's orthogonalized update divided by the
            root of its running mean square, each matrix then back at its orthogonalized norm.
        neuron_beta_2: float. Decay of that running mean square.
        variables: the model's trainable variables (set by the trainer).
        fused_matrices: `{variable path: FusedMatrices}` (set by the trainer from the layers'
            `fused_matrices()`).

    Example:

    >>> opt = muon(1e-3)
    >>> type(opt).__name__
    'Muon'

    Reference: Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks";
    Liu et al. 2025, "Muon is Scalable for LLM Training" (the RMS matching); Li et al. 2025,
    "NorMuon: Making Muon more efficient and scalable" (`neuron_norm`).
    """
    _check_adam_arguments(weight_decay, beta_1, beta_2)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if not 0.0 <= initial_momentum < 1.0:
        raise ValueError(f"initial_momentum must be in [0, 1), got {initial_momentum}")
    if momentum_warmup_steps < 0:
        raise ValueError(f"momentum_warmup_steps must be >= 0, got {momentum_warmup_steps}")
    if rms_rate < 0:
        raise ValueError(f"rms_rate must be >= 0 (0: the raw update), got {rms_rate}")
    if ns_steps < 1:
        raise ValueError(f"ns_steps must be at least 1, got {ns_steps}")
    if not 0.0 <= neuron_beta_2 < 1.0:
        raise ValueError(f"neuron_beta_2 must be in [0, 1), got {neuron_beta_2}")
    flags = (("split_fused", split_fused), ("per_head", per_head), ("neuron_norm", neuron_norm))
    for name, value in flags:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
    if per_head and not split_fused:
        raise ValueError("per_head splits fused projections further: it needs split_fused=true")
    opt = Muon(
        fused_matrices=fused_matrices if split_fused else None,
        per_head=per_head,
        momentum_warmup_steps=momentum_warmup_steps,
        initial_momentum=initial_momentum,
        neuron_norm=neuron_norm,
        neuron_beta_2=neuron_beta_2,
        learning_rate=learning_rate,
        adam_beta_1=beta_1,
        adam_beta_2=beta_2,
        adam_weight_decay=weight_decay,
        weight_decay=weight_decay,
        epsilon=epsilon,
        exclude_layers=list(adamw_for),
        exclude_embeddings=True,
        adam_lr_ratio=adam_lr_ratio,
        momentum=momentum,
        ns_steps=ns_steps,
        nesterov=nesterov,
        rms_rate=rms_rate or None,  # Keras's "no matching" is None; 0 would zero the update
    )
    return _without_decay(opt, variables, exclude_from_weight_decay)
