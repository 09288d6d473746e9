"""LoRA: train low-rank updates of chosen dense layers while every base weight stays frozen."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

import keras

from tfllm.registry import register

DEFAULT_TARGETS = ("qkv_proj", "q_proj", "kv_proj", "out_proj")


def lora_layers(model: Any) -> list[keras.layers.Dense]:
    """The dense layers of `model` with LoRA enabled."""
    return [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.Dense) and getattr(layer, "lora_enabled", False)
    ]


@register("adapter", "lora")
class LoRA:
    """Low-rank adaptation (Hu et al. 2021) through Keras's own `Dense.enable_lora`.

    `apply(model)` adds `W + (alpha / rank) * A @ B` to every dense layer of the task's backbone
    and head whose name (or path) matches one of `targets` (shell patterns: `qkv_proj`,
    `*ffn*`), with `B` starting at zero so
    the adapted model starts as the base model, and freezes every other weight of the model:
    only `A` and `B` train. `merged_variables(model)` gives the base weights with the updates
    folded in, what an export serves.

    Args:
        rank: int. Rank of the update.
        alpha: float. Scale numerator (`alpha / rank` multiplies `A @ B`).
        targets: layer names or paths (shell patterns) to adapt. The default is every attention
            projection (`qkv_proj`, `out_proj`, and `q_proj`/`kv_proj` of cross-attention).

    Example:

    >>> from tfllm.models.decoder import DecoderBackbone
    >>> from tfllm.tasks.causal_lm import CausalLM
    >>> lm = CausalLM(DecoderBackbone(vocabulary_size=50, num_layers=2, hidden_dim=16,
    ...                               num_heads=2, max_sequence_length=16))
    >>> adapted = LoRA(rank=4).apply(lm)
    >>> len(adapted), len(lm.trainable_weights)
    (4, 8)
    """

    def __init__(
        self, rank: int = 8, alpha: float = 16.0, targets: Sequence[str] = DEFAULT_TARGETS
    ):
        if not isinstance(rank, int) or rank <= 0:
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        if alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        if not targets:
            raise ValueError("targets: name at least one layer pattern")
        self.rank = rank
        self.alpha = float(alpha)
        self.targets = [str(t) for t in targets]

    def _matches(self, layer: keras.layers.Layer) -> bool:
        return any(
            fnmatch.fnmatch(layer.name, t) or fnmatch.fnmatch(layer.path, t) for t in self.targets
        )

    def apply(self, model: Any) -> list[str]:
        """Enable LoRA on the matching dense layers and freeze everything else; returns the
        adapted layers' paths."""
        # The backbone (and the task's own head): never a frozen reference model inside a task.
        scope = [getattr(model, "backbone", model)] + [getattr(model, "head", None)]
        dense = [
            layer
            for part in scope
            if part is not None
            for layer in part._flatten_layers()
            if isinstance(layer, keras.layers.Dense)
        ]
        chosen = [layer for layer in dense if self._matches(layer)]
        if not chosen:
            names = sorted({layer.name for layer in dense})
            raise ValueError(
                f"targets {self.targets} match no dense layer; the model's are: {', '.join(names)}"
            )
        for layer in chosen:
            if min(layer.kernel.shape) < self.rank:
                raise ValueError(
                    f"rank={self.rank} exceeds the smaller side of {layer.path} "
                    f"({tuple(layer.kernel.shape)})"
                )
            layer.enable_lora(self.rank, lora_alpha=self.alpha)
        adapters = {id(w) for layer in chosen for w in (layer.lora_kernel_a, layer.lora_kernel_b)}
        for weight in model.weights:
            if id(weight) not in adapters:
                weight.trainable = False
        return [layer.path for layer in chosen]

    @staticmethod
    def merged_variables(model: Any) -> dict[str, Any]:
        """`model_variables(model)` without the adapters, each adapted kernel replaced by
        `W + (alpha / rank) * A @ B`: load it into the same model built without the adapter."""
        from tfllm.models.variables import model_variables

        def key(variable):  # model_variables holds the backend variables
            return id(getattr(variable, "value", variable))

        layers = lora_layers(model)
        effective = {key(layer._kernel): layer.kernel for layer in layers}
        adapters = {key(w) for layer in layers for w in (layer.lora_kernel_a, layer.lora_kernel_b)}
        merged = {}
        for name, variable in model_variables(model).items():
            if id(variable) in adapters:
                continue
            merged[name] = effective.get(id(variable), variable)
        return merged


def merge_adapter(model: Any, cfg: dict[str, Any], tokenizer: Any) -> tuple[Any, dict[str, Any]]:
    """The model of `cfg` built without its adapter, holding `model`'s merged weights, and the
    config without the adapter: what exports and serving run."""
    from tfllm.models.builder import build_model
    from tfllm.models.variables import model_variables

    plain_cfg = {k: v for k, v in cfg.items() if k != "adapter"}
    plain = build_model(
        plain_cfg,
        tokenizer.vocabulary_size,
        tokenizer.special_token_ids(),
        tokenizer.sentinel_ids(),
        tokenizer,
    )
    merged = LoRA.merged_variables(model)
    targets = model_variables(plain)
    missing = sorted(set(targets) - set(merged))
    if missing:
        raise ValueError(f"merging the adapter: no value for {missing[:3]}")
    for name, variable in targets.items():
        variable.assign(merged[name])
    return plain, plain_cfg
