"""From a resolved config to a tokenizer and a task model, through the registry alone."""

from __future__ import annotations

from typing import Any

import keras

from tfllm import registry
from tfllm.components.tokenizers.base import Tokenizer
from tfllm.registry import ConfigError


def build_tokenizer(cfg: dict[str, Any]) -> Tokenizer:
    """The tokenizer named by `cfg["tokenizer"]` (not yet adapted to a corpus)."""
    return registry.build("tokenizer", cfg["tokenizer"], key="tokenizer")


def build_model(
    cfg: dict[str, Any],
    vocabulary_size: int,
    special_tokens: dict[str, int] | None = None,
    sentinel_ids: list[int] | None = None,
    tokenizer: Tokenizer | None = None,
) -> keras.Model:
    """Backbone (`model` group, with the component groups) wrapped by the `task`.

    `special_tokens` (role -> id, from the tokenizer) and `sentinel_ids` are offered to tasks
    that need them (masked LM's `[MASK]`, span corruption's sentinels); `tokenizer` to tasks that
    read text (PPO's reward functions)."""
    from tfllm.compression.quantize import build_precision

    spec = dict(cfg["model"])
    name = spec.pop("name")
    backbone_spec = {"name": name, **spec}
    for group in ("attention", "positional", "ffn", "norm"):
        backbone_spec[group] = dict(cfg[group])
    task = dict(cfg["task"])
    task_spec = {"name": task.pop("name"), **task}
    # A `tfllm quantize mode=bf16` run: every layer is constructed under the bfloat16 policy.
    with build_precision(cfg.get("quantization")):
        backbone = registry.build(
            "model", backbone_spec, {"vocabulary_size": vocabulary_size}, key="model"
        )
        context = {
            "backbone": backbone,
            "head": dict(cfg["head"]),
            "special_tokens": special_tokens,
            "sentinel_ids": sentinel_ids,
            "tokenizer": tokenizer,
        }
        model = registry.build("task", task_spec, context, key="task")
    if cfg.get("adapter"):  # e.g. LoRA: only the adapter's weights train
        try:
            registry.build("adapter", cfg["adapter"], key="adapter").apply(model)
        except ValueError as e:
            raise ConfigError(f"adapter: {e}") from None
    if cfg.get("quantization"):  # a run written by `tfllm quantize`: int8 weights (bf16: above)
        from tfllm.compression.quantization_spec import check_quantization
        from tfllm.compression.quantize import quantize_model

        quantize_model(model, **check_quantization(cfg["quantization"]))
    return model
