"""What `tfllm quantize` (and a run's `quantization` block) may ask for, checked without
TensorFlow; `quantize.py` does the quantizing."""

from __future__ import annotations

from typing import Any

from tfllm.registry import ConfigError

# `int8`: int8 matrices with one float scale per output channel, everything else float32.
# `bf16`: every weight and every computation in bfloat16 (Keras's `bfloat16` dtype policy);
# logits and sampling stay float32.
MODES = ("int8", "bf16")
# `none`: int8 weights, float activations (each matmul dequantizes per output channel).
# `dynamic`: activations quantized per token at run time too (int8 x int8 matmuls).
ACTIVATIONS = ("none", "dynamic")


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
