"""Post-training weight precision: int8 quantization of a model's dense layers and embeddings
(Keras's own), or the whole model in bfloat16."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras

from tfllm.registry import ConfigError

# `int8`: int8 matrices with one float scale per output channel, everything else float32.
# `bf16`: every weight and every computation in bfloat16 (Keras's `bfloat16` dtype policy);
# logits and sampling stay float32.
MODES = ("int8", "bf16")
# `none`: int8 weights, float activations (each matmul dequantizes per output channel).
# `dynamic`: activations quantized per token at run time too (int8 x int8 matmuls).
ACTIVATIONS = ("none", "dynamic")
QUANTIZABLE = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Embedding)


def check_quantization(spec: dict[str, Any]) -> dict[str, str]:
    """The `quantization` config block with defaults, or a ConfigError naming the bad key.

    `{"mode": "int8", "activations": ...}` or `{"mode": "bf16"}` (activations are bfloat16
    there by construction)."""
    spec = dict(spec)
    mode = spec.pop("mode", "int8")
    activations = spec.pop("activations", "none")
    if spec:
        raise ConfigError(
            f"quantization.{sorted(spec)[0]}: unknown key; valid keys: mode, activations"
        )
    if mode not in MODES:
        raise ConfigError(f"quantization.mode must be one of {MODES}, got {mode!r}")
    if activations not in ACTIVATIONS:
        raise ConfigError(
            f"quantization.activations must be one of {ACTIVATIONS}, got {activations!r}"
        )
    if mode == "bf16":
        if activations != "none":
            raise ConfigError(
                f"quantization.activations={activations!r} applies to mode int8 only "
                "(bf16 computes in bfloat16 throughout)"
            )
        return {"mode": mode}
    return {"mode": mode, "activations": activations}


@contextlib.contextmanager
def build_precision(spec: dict[str, Any] | None) -> Iterator[None]:
    """Layers constructed inside take the precision's Keras dtype policy (`bfloat16` for mode
    bf16; nothing changes otherwise), and the global policy is restored after."""
    if not spec or check_quantization(spec)["mode"] != "bf16":
        yield
        return
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("bfloat16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def quantize_model(model: Any, mode: str = "int8", activations: str = "none") -> list[str]:
    """Quantize every dense layer and embedding of `model` to int8 in place; returns their
    paths. (bf16 is chosen when a model is built, under `build_precision`, not in place.)

    Weights become int8 with one float scale per output channel (per row for embeddings,
    symmetric abs-max, Keras's `Int8QuantizationConfig`); a tied LM head reads the quantized
    embedding. Layers of other kinds (norms, learned positions, an untied head's kernel,
    mixture-of-experts weights) stay in floating point.
    """
    spec = check_quantization({"mode": mode, "activations": activations})
    if spec["mode"] != "int8":
        return []  # built in its precision by build_model
    from keras.quantizers import AbsMaxQuantizer, Int8QuantizationConfig

    config = Int8QuantizationConfig(
        activation_quantizer=None if spec["activations"] == "none" else AbsMaxQuantizer(axis=-1)
    )
    done = []
    for layer in model._flatten_layers():
        if type(layer) in QUANTIZABLE and layer.quantization_mode is None:
            if getattr(layer, "lora_enabled", False):
                raise ValueError(
                    f"{layer.path} carries a LoRA adapter: merge it first (tfllm export and "
                    "tfllm quantize do)"
                )
            layer.quantize(spec["mode"], config=config)
            done.append(layer.path)
    return done


def weight_bytes(model: Any) -> int:
    """Bytes of every weight of `model` as stored (int8 weights count one byte each, bfloat16
    two)."""
    return sum(int(w.numpy().nbytes) for w in model.weights)
