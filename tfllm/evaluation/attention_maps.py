"""Per-layer, per-head attention heatmaps of a model on one text."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tfllm.registry import ConfigError


def attention_probabilities(model: Any, tokenizer: Any, text: str) -> tuple[list[str], np.ndarray]:
    """Run `text` through the model eagerly and return its tokens and the attention
    probabilities `(layers, heads, T, T)` of every block.

    Raises:
        ConfigError: the text is empty or too long, or an attention layer does not expose its
            probabilities (only attention with `capture_attention` does, e.g. `mha`).
    """
    backbone = model.backbone
    ids = tokenizer.encode_one(text)
    bos = tokenizer.prompt_bos_id
    if bos is not None:
        ids = [bos, *ids]
    if not ids:
        raise ConfigError("text: nothing to look at (it encodes to no tokens)")
    if len(ids) > backbone.max_sequence_length:
        raise ConfigError(
            f"text: {len(ids)} tokens, more than the model's context of "
            f"{backbone.max_sequence_length}"
        )
    layers = [block.attention for block in backbone.blocks]
    for layer in layers:
        if not hasattr(layer, "capture_attention"):
            raise ConfigError(
                f"attention layer {type(layer).__name__} does not expose its probabilities "
                "(capture_attention); attention maps need softmax attention such as mha"
            )
        layer.capture_attention = True
    try:
        model(np.asarray([ids], np.int32), training=False)
        maps = np.stack([np.asarray(layer.last_attention)[0] for layer in layers])
    finally:
        for layer in layers:
            layer.capture_attention = False
            layer.last_attention = None
    tokens = [tokenizer.decode([i], skip_special_tokens=False) for i in ids]
    return tokens, maps  # (L, H, T, T)


def plot_attention(tokens: list[str], maps: np.ndarray, out_dir: str) -> list[str]:
    """One PNG per layer, a grid of its heads (query rows, key columns); returns the paths."""
    from tfllm.evaluation.plotting import pyplot

    plt = pyplot()

    os.makedirs(out_dir, exist_ok=True)
    labels = [repr(t)[1:-1] or "·" for t in tokens]
    num_layers, num_heads, t, _ = maps.shape
    cols = min(num_heads, 4)
    rows = (num_heads + cols - 1) // cols
    size = max(3.0, 0.28 * t + 1.5)
    paths = []
    for layer in range(num_layers):
        fig, axes = plt.subplots(
            rows, cols, figsize=(size * cols, size * rows), dpi=100, squeeze=False
        )
        for head in range(rows * cols):
            ax = axes[head // cols][head % cols]
            if head >= num_heads:
                ax.axis("off")
                continue
            ax.imshow(maps[layer, head], cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {layer} head {head}", fontsize=9)
            ax.set_xticks(range(t), labels, rotation=90, fontsize=7)
            ax.set_yticks(range(t), labels, fontsize=7)
        fig.tight_layout()
        path = os.path.join(out_dir, f"attention_layer{layer:02d}.png")
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
