"""Perplexity of a causal LM over a long text, with a sliding window."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tfllm import progress


@dataclass
class PerplexityResult:
    """Sliding-window perplexity of one text.

    Attributes:
        nll: total negative log-likelihood (nats) of the scored tokens.
        tokens: how many tokens were scored (every token after the first).
        bytes: UTF-8 bytes of the text.
        window: tokens the model sees per forward pass.
        stride: new tokens scored per window.
    """

    nll: float
    tokens: int
    bytes: int
    window: int
    stride: int

    @property
    def mean_nll(self) -> float:
        return self.nll / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll)

    @property
    def bits_per_byte(self) -> float:
        """Total NLL in bits over UTF-8 bytes: comparable across tokenizers."""
        return self.nll / (math.log(2) * self.bytes)

    def as_dict(self) -> dict[str, float]:
        return {
            "perplexity": self.perplexity,
            "mean_nll": self.mean_nll,
            "bits_per_byte": self.bits_per_byte,
            "tokens": self.tokens,
            "bytes": self.bytes,
            "window": self.window,
            "stride": self.stride,
        }


def window_spans(length: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """`(begin, end, first_scored)` windows over `length` tokens.

    Each window covers `ids[begin:end]` (at most `window` tokens) and scores the predictions of
    tokens `first_scored..end-1`. The first window scores all of its tokens; each later one
    slides by `stride` and scores only its `stride` new tokens, with `window - stride` tokens of
    context before them. Every token after the first is scored exactly once (Hugging Face's
    "perplexity of fixed-length models" recipe).
    """
    if window < 2:
        raise ValueError(f"window must be at least 2 tokens, got {window}")
    if not 1 <= stride <= window - 1:
        raise ValueError(f"stride must be in [1, window - 1] = [1, {window - 1}], got {stride}")
    if length < 2:
        return []
    end = min(length, window)
    spans, scored_to = [(0, end, 1)], end  # token 0 has no prediction
    while scored_to < length:
        end = min(length, scored_to + stride)
        begin = max(0, end - window)
        spans.append((begin, end, scored_to))
        scored_to = end
    return spans


def sliding_window_nll(
    model: Any,
    token_ids: list[int] | np.ndarray,
    window: int,
    stride: int,
    batch_size: int = 8,
) -> tuple[float, int]:
    """Total NLL (nats) and the number of scored tokens of `token_ids` under a causal LM."""
    ids = np.asarray(token_ids, dtype=np.int32)
    spans = window_spans(len(ids), window, stride)
    forward = tf.function(
        lambda x: model(x, training=False), reduce_retracing=True, autograph=False
    )
    total, count = 0.0, 0
    starts = range(0, len(spans), batch_size)
    for i in progress.tracked(starts, "perplexity", unit="batch"):
        chunk = spans[i : i + batch_size]
        width = max(end - begin for begin, end, _ in chunk)
        batch = np.zeros((len(chunk), width), np.int32)
        for row, (begin, end, _) in enumerate(chunk):
            batch[row, : end - begin] = ids[begin:end]
        log_probs = tf.nn.log_softmax(tf.cast(forward(tf.constant(batch)), tf.float32)).numpy()
        for row, (begin, end, first) in enumerate(chunk):
            positions = np.arange(first - begin, end - begin)  # tokens scored in this window
            targets = batch[row, positions]
            total -= float(log_probs[row, positions - 1, targets].astype(np.float64).sum())
            count += len(positions)
    return total, count


def perplexity(
    model: Any,
    tokenizer: Any,
    text: str,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
) -> PerplexityResult:
    """Sliding-window perplexity and bits per byte of `text`.

    Args:
        model: a causal LM returning `(B, T, V)` logits.
        tokenizer: its tokenizer; a `bos` token is prepended when the tokenizer adds one to
            prompts, so the first real token is scored too.
        text: the text.
        window: tokens per forward pass (default: the model's context).
        stride: new tokens scored per window (default: half the window).
        batch_size: windows per forward pass.
    """
    if not text:
        raise ValueError("the text to score is empty")
    window = window or model.backbone.max_sequence_length
    if window > model.backbone.max_sequence_length:
        raise ValueError(
            f"window={window} exceeds the model's context of "
            f"{model.backbone.max_sequence_length} tokens"
        )
    stride = stride or max(1, window // 2)
    ids = tokenizer.encode_one(text)
    bos = tokenizer.prompt_bos_id
    if bos is not None:
        ids = [bos, *ids]
    if len(ids) < 2:
        raise ValueError("the text is shorter than two tokens: nothing to score")
    nll, count = sliding_window_nll(model, ids, window, stride, batch_size)
    return PerplexityResult(nll, count, len(text.encode("utf-8")), window, stride)
