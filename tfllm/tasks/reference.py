"""The frozen reference model that preference and RL tasks measure their policy against."""

from __future__ import annotations

from typing import Any

import keras

from tfllm.tasks.causal_lm import CausalLM


def frozen_reference(policy: CausalLM) -> CausalLM:
    """A non-trainable causal LM with the policy's architecture, its weights under `reference/`
    (so checkpoints name them apart from the policy's). Call `copy_policy` to fill it."""
    with keras.name_scope("reference"):
        backbone = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(policy.backbone)
        )
        reference = CausalLM(backbone, head=policy.head_spec, name="reference")
    reference.trainable = False
    return reference


def _value(layers: list[Any], weight):
    """A weight's value, with any LoRA update of its dense layer folded in."""
    for layer in layers:
        if getattr(layer, "lora_enabled", False) and layer._kernel is weight:
            return layer.kernel
    return weight.value


def copy_policy(policy: CausalLM, reference: CausalLM) -> None:
    """Make `reference` compute what `policy` computes now (adapters folded in)."""
    layers = list(policy.backbone._flatten_layers()) + list(policy.head._flatten_layers())
    source = [
        w for w in policy.backbone.weights + policy.head.weights if "lora_kernel" not in w.path
    ]
    target = reference.backbone.weights + reference.head.weights
    if len(source) != len(target):
        raise ValueError("the reference does not mirror the policy's weights")
    for s, t in zip(source, target, strict=True):
        t.assign(_value(layers, s))
