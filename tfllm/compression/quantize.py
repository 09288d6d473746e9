"""Post-training weight precision: int8 quantization of a model's dense layers and embeddings
(Keras's own), or the whole model in bfloat16."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras

from tfllm.components.products import Projection
from tfllm.compression.quantization_spec import check_quantization

QUANTIZABLE = (
    keras.layers.Dense,
    Projection,
    keras.layers.EinsumDense,
    keras.layers.Embedding,
)


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
