"""T5's span corruption: drop random spans from the input and predict them behind sentinels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from tfllm import registry
from tfllm.tasks.seq2seq import Seq2SeqLM


def span_counts(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """`(noise tokens, noise spans)` for blocks of `length` tokens, as T5 rounds them."""
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = min(max(int(round(num_noise / mean_span_length)), 1), num_noise, length - num_noise)
    return num_noise, num_spans


def _random_segmentation(batch, num_items: int, num_segments: int, seed):
    """Lengths `(B, num_segments)` of a uniformly random split of `num_items` items into
    `num_segments` non-empty runs, per row."""
    if num_segments == 1:
        return tf.fill([batch, 1], num_items)
    scores = tf.random.stateless_uniform([batch, num_items - 1], seed=seed)
    cuts = tf.sort(tf.math.top_k(scores, num_segments - 1).indices + 1, axis=-1)  # (B, k-1)
    ends = tf.concat([cuts, tf.fill([batch, 1], num_items)], axis=1)  # (B, k)
    starts = tf.concat([tf.zeros([batch, 1], tf.int32), cuts], axis=1)
    return ends - starts


def _compact(values, keep, count: int):
    """The `count` kept entries of each row of `values` `(B, L)`, in order: `(B, count)`.

    A stable sort of the keep flags puts each row's kept positions first (every row keeps
    exactly `count`), so the shape is static. (`tf.boolean_mask` then a reshape fails under
    XLA, which bounds the mask's output at `B * L`.)
    """
    order = tf.argsort(tf.cast(~keep, tf.int32), axis=1, stable=True)  # (B, L) kept first
    return tf.gather(values, order[:, :count], batch_dims=1)


def span_corrupt(
    token_ids,
    seed,
    sentinel_ids: Sequence[int],
    noise_density: float = 0.15,
    mean_span_length: float = 3.0,
    eos_id: int | None = None,
):
    """Corrupt blocks of tokens as T5 does, with static output shapes.

    Each row of `(B, L)` ids gets `round(L * noise_density)` noise tokens in
    `round(noise / mean_span_length)` spans (lengths and places uniformly random, the row
    starting with kept tokens). The input replaces noise span `i` with sentinel `i`; the target
    is sentinel `i` followed by noise span `i`, for each span. Both end with eos when given.

    Args:
        token_ids: `(B, L)` int32, `L` static.
        seed: `(2,)` int32 stateless seed.
        sentinel_ids: the sentinel token ids, at least as many as spans.

    Returns:
        `(encoder_ids (B, L - noise + spans [+1]), targets (B, noise + spans [+1]))`.
    """
    token_ids = tf.convert_to_tensor(token_ids, tf.int32)
    length = token_ids.shape[1]
    if length is None or length < 2:
        raise ValueError(f"span corruption needs a static block length >= 2, got {length}")
    num_noise, num_spans = span_counts(length, noise_density, mean_span_length)
    if len(sentinel_ids) < num_spans:
        raise ValueError(
            f"{num_spans} noise spans per block need as many sentinel tokens; the tokenizer has "
            f"{len(sentinel_ids)} (set tokenizer.extra_ids, or lower data.sequence_length)"
        )
    b = tf.shape(token_ids)[0]
    noise = _random_segmentation(b, num_noise, num_spans, seed)  # (B, k)
    kept = _random_segmentation(b, length - num_noise, num_spans, seed + 1)  # (B, k)
    lengths = tf.reshape(tf.stack([kept, noise], axis=2), [b, 2 * num_spans])  # (B, 2k)
    ends = tf.cumsum(lengths, axis=1)  # (B, 2k), exclusive span ends
    positions = tf.range(length)
    span = tf.reduce_sum(tf.cast(ends[:, None, :] <= positions[None, :, None], tf.int32), -1)
    starts = tf.gather(ends - lengths, span, batch_dims=1)  # (B, L) start of each token's span
    first = positions[None, :] == starts  # (B, L)
    is_noise = span % 2 == 1
    sentinels = tf.gather(tf.constant(list(sentinel_ids)[:num_spans], tf.int32), span // 2)

    # The input keeps the kept tokens and a sentinel for each noise span; the target keeps the
    # noise tokens and a sentinel in place of each kept span.
    keep_inputs = ~is_noise | first
    keep_targets = is_noise | first
    inputs = _compact(
        tf.where(is_noise & first, sentinels, token_ids),
        keep_inputs,
        length - num_noise + num_spans,
    )  # (B, L - noise + spans)
    targets = _compact(
        tf.where(~is_noise & first, sentinels, token_ids), keep_targets, num_noise + num_spans
    )  # (B, noise + spans)
    if eos_id is not None:
        eos = tf.fill([b, 1], tf.cast(eos_id, tf.int32))
        inputs = tf.concat([inputs, eos], axis=1)
        targets = tf.concat([targets, eos], axis=1)
    return inputs, targets


@registry.register("task", "span_corruption")
class SpanCorruption(Seq2SeqLM):
    """T5 pretraining on plain text: each block is corrupted in the graph by `span_corrupt`
    (15% noise in spans of mean length 3 by default) with a stateless seed drawn from the
    block's own ids and `seed`, so a run's corruption is a pure function of its batches (resumed
    and multi-worker runs corrupt exactly as an uninterrupted one). Every target token carries
    loss. Needs a tokenizer with sentinels (`<extra_id_i>`; `tokenizer.extra_ids=N` for char).

    Args:
        backbone, head, special_tokens: as in `Seq2SeqLM`.
        sentinel_ids: the tokenizer's sentinel ids (set by the builder).
        noise_density: float. Share of tokens dropped from the input.
        mean_span_length: float. Mean length of a dropped span.
        seed: int. Corruption seed.

    Example:

    >>> import numpy as np
    >>> from tfllm.models.encoder_decoder import EncoderDecoderBackbone
    >>> backbone = EncoderDecoderBackbone(vocabulary_size=50, num_layers=1, hidden_dim=16,
    ...                                   num_heads=2, max_sequence_length=32)
    >>> task = SpanCorruption(backbone, special_tokens={"pad": 0, "eos": 1},
    ...                       sentinel_ids=list(range(40, 50)))
    >>> batch = task.pair_batch({"token_ids": np.arange(2, 22, dtype="int32")[None]})
    >>> batch["encoder_ids"].shape, batch["labels"].shape
    (TensorShape([1, 19]), TensorShape([1, 5]))
    """

    def __init__(
        self,
        backbone: Any,
        head: dict[str, Any] | None = None,
        special_tokens: dict[str, int] | None = None,
        sentinel_ids: Sequence[int] | None = None,
        noise_density: float = 0.15,
        mean_span_length: float = 3.0,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(backbone, head=head, special_tokens=special_tokens, **kwargs)
        if not 0.0 < noise_density < 1.0:
            raise ValueError(f"noise_density must be in (0, 1), got {noise_density}")
        if mean_span_length < 1.0:
            raise ValueError(f"mean_span_length must be at least 1, got {mean_span_length}")
        self.sentinel_ids = [int(i) for i in sentinel_ids or ()]
        if not self.sentinel_ids:
            raise ValueError(
                "span_corruption needs sentinel tokens <extra_id_0>, <extra_id_1>, ... in the "
                "vocabulary (for example tokenizer=char_t5, or tokenizer.extra_ids=32)"
            )
        self.noise_density = noise_density
        self.mean_span_length = mean_span_length
        self.seed = seed

    def _task_name(self) -> str:
        return "span_corruption"

    def pair_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        token_ids = tf.cast(batch["token_ids"], tf.int32)  # (B, L)
        positions = tf.range(tf.shape(token_ids)[1], dtype=tf.int32)[None, :] + 1
        fingerprint = tf.reduce_sum(token_ids * positions) % 2147483647  # the batch's own seed
        seed = tf.stack([tf.constant(self.seed, tf.int32), fingerprint])
        inputs, targets = span_corrupt(
            token_ids,
            seed,
            self.sentinel_ids,
            self.noise_density,
            self.mean_span_length,
            self.special_tokens.get("eos"),
        )
        return {
            "encoder_ids": inputs,
            "encoder_mask": tf.ones_like(inputs),
            "labels": targets,
            "loss_weights": tf.ones_like(targets, tf.float32),
        }

    def task_config(self) -> dict[str, Any]:
        return {
            **super().task_config(),
            "sentinel_ids": self.sentinel_ids,
            "noise_density": self.noise_density,
            "mean_span_length": self.mean_span_length,
            "seed": self.seed,
        }
