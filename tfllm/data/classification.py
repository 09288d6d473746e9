"""Labelled text from TSV files, for sequence classification."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tfllm.data.rows import RowDataset
from tfllm.data.tsv import read_labelled_tsv
from tfllm.registry import ConfigError, register
from tfllm.tasks.packing import pack_texts


@dataclass
class EncodedSplit:
    """One split, tokenized and padded: `ids (N, T)`, `mask (N, T)`, `segments (N, T)` and
    `labels (N,)`."""

    ids: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    segments: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


@register("dataset", "tsv_classification")
class TSVClassificationDataset(RowDataset):
    """Labelled texts from TSV files with a header, for `task=classify`.

    Each text (or pair of texts, with `pair_column`) is packed by
    `tfllm.tasks.packing.pack_texts`: `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]` with segment
    ids, cut `longest_first` to `sequence_length` and padded — the rule Python inference and
    exports follow too. Batching is `RowDataset`'s: a pure function of the
    step for training, every row once for validation.

    Args:
        train: the training TSV.
        val: the validation TSV.
        labels: the classes, in order (a row with another label is an error naming the file and
            line); usually `${task.labels}`.
        text_column, label_column: the header names.
        pair_column: the header name of the second text of pair tasks, or None.
        sequence_length: int. Tokens per example, boundary tokens included.
        batch_size: int. Global examples per optimizer step.
        seed: int. Shuffle seed.
    """

    def __init__(
        self,
        train: str | None = None,
        val: str | None = None,
        labels: Sequence[str] = ("0", "1"),
        text_column: str = "sentence",
        label_column: str = "label",
        pair_column: str | None = None,
        sequence_length: int = 128,
        batch_size: int = 32,
        seed: int = 0,
    ):
        if not train or not val:
            raise ConfigError("data.train and data.val: both TSV files are required")
        if sequence_length < 2:
            raise ConfigError(f"data.sequence_length must be at least 2, got {sequence_length}")
        if batch_size <= 0:
            raise ConfigError(f"data.batch_size must be positive, got {batch_size}")
        self.train = train
        self.val = val
        self.labels = [str(label) for label in labels]
        if len(set(self.labels)) < 2:
            raise ConfigError(f"task.labels: at least two distinct classes, got {self.labels}")
        self.text_column = text_column
        self.label_column = label_column
        self.pair_column = pair_column or None
        self.sequence_length = sequence_length
        self.batch_size = batch_size
        self.seed = seed

    def _rows(self, path: str):
        return read_labelled_tsv(
            path, self.labels, self.text_column, self.label_column, self.pair_column
        )

    def texts(self) -> tuple[list[str], list[str]]:
        """Training and validation texts (for adapting an untrained tokenizer)."""

        def texts(path):
            return [t for r in self._rows(path) for t in (r.text, r.pair) if t is not None]

        return texts(self.train), texts(self.val)

    def encode(self, tokenizer, path: str) -> EncodedSplit:
        rows = self._rows(path)
        pairs = [r.pair for r in rows] if self.pair_column else None
        try:
            packed = pack_texts(tokenizer, [r.text for r in rows], pairs, self.sequence_length)
        except ValueError as e:
            raise ConfigError(f"{path}: {e}") from None
        index = {label: k for k, label in enumerate(self.labels)}
        labels = np.asarray([index[r.label] for r in rows], np.int32)
        segments = packed.segments if self.pair_column else None
        return EncodedSplit(packed.ids, packed.mask, labels, segments)

    def _gather(self, split: EncodedSplit, rows, weights, per_replica: int) -> dict[str, Any]:
        t = self.sequence_length
        ids, mask, labels = (tf.constant(a) for a in (split.ids, split.mask, split.labels))
        batch = {
            "token_ids": tf.ensure_shape(tf.gather(ids, rows), [per_replica, t]),
            "padding_mask": tf.ensure_shape(tf.gather(mask, rows), [per_replica, t]),
            "labels": tf.ensure_shape(tf.gather(labels, rows), [per_replica]),
            "loss_weights": tf.ensure_shape(weights, [per_replica]),
        }
        if split.segments is not None:
            segments = tf.gather(tf.constant(split.segments), rows)
            batch["segment_ids"] = tf.ensure_shape(segments, [per_replica, t])
        return batch
