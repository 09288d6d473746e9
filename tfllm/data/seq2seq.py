"""Source-target pairs from TSV files, for sequence-to-sequence training and BLEU."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tfllm.data.rows import RowDataset
from tfllm.generation.prompts import pack_with_eos
from tfllm.registry import ConfigError, register

log = logging.getLogger(__name__)


def read_pairs(path: str, source_column: str, target_column: str) -> list[tuple[str, str]]:
    """`(source, target)` rows of a TSV with a header; errors name the file and line."""
    try:
        handle = open(path, encoding="utf-8", newline="")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    with handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None) or []
        for column in (source_column, target_column):
            if column not in header:
                raise ConfigError(f"{path}:1: no '{column}' column in the header {header}")
        si, ti = header.index(source_column), header.index(target_column)
        pairs = []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ConfigError(
                    f"{path}:{line}: {len(row)} tab-separated fields, the header has {len(header)}"
                )
            if not row[si].strip():
                raise ConfigError(f"{path}:{line}: the source text is empty")
            pairs.append((row[si], row[ti]))
    if not pairs:
        raise ConfigError(f"{path}: no rows after the header")
    return pairs


@dataclass
class PairSplit:
    """One split, tokenized and padded: sources `(N, S)` and targets `(N, T)` with masks."""

    source_ids: np.ndarray
    source_mask: np.ndarray
    target_ids: np.ndarray
    target_mask: np.ndarray

    def __len__(self) -> int:
        return len(self.source_ids)


def encode_texts(tokenizer, texts: list[str], length: int, what: str) -> tuple[np.ndarray, ...]:
    """Ids of `texts` each followed by eos (when the tokenizer has one), cut to `length` and
    padded: `(ids (N, length), mask (N, length))`. Counts the cut ones in a warning."""
    bodies = tokenizer.encode(texts)["input_ids"] if texts else []
    ids, mask, cut = pack_with_eos(bodies, length, tokenizer.eos_id, tokenizer.pad_id)
    if cut:
        log.warning("%d of %d %s texts were cut to %d tokens", cut, len(texts), what, length)
    return ids, mask


@register("dataset", "tsv_seq2seq")
class TSVSeq2SeqDataset(RowDataset):
    """Source-target pairs from TSV files with a header, for `task=seq2seq`.

    Sources and targets are tokenized, each followed by eos, cut and padded to
    `source_length` / `target_length`. A batch holds `encoder_ids`, `encoder_mask`, `labels`
    (the target ids) and `loss_weights` (1 on real target tokens); the task makes the decoder
    inputs by shifting the labels right. Batching is `RowDataset`'s: a pure function of the
    step for training, every row once for validation.

    Args:
        train: the training TSV.
        val: the validation TSV.
        source_column, target_column: the header names.
        source_length: int. Encoder tokens per example (eos included).
        target_length: int. Decoder tokens per example (eos included).
        batch_size: int. Global examples per optimizer step.
        seed: int. Shuffle seed.
    """

    def __init__(
        self,
        train: str | None = None,
        val: str | None = None,
        source_column: str = "source",
        target_column: str = "target",
        source_length: int = 64,
        target_length: int = 64,
        batch_size: int = 32,
        seed: int = 0,
    ):
        if not train or not val:
            raise ConfigError("data.train and data.val: both TSV files are required")
        for key, value in (("source_length", source_length), ("target_length", target_length)):
            if value < 2:
                raise ConfigError(f"data.{key} must be at least 2, got {value}")
        if batch_size <= 0:
            raise ConfigError(f"data.batch_size must be positive, got {batch_size}")
        self.train = train
        self.val = val
        self.source_column = source_column
        self.target_column = target_column
        self.source_length = source_length
        self.target_length = target_length
        self.batch_size = batch_size
        self.seed = seed

    @property
    def sequence_length(self) -> int:
        """Tokens per example, source and target together (for throughput)."""
        return self.source_length + self.target_length

    def _pairs(self, path: str) -> list[tuple[str, str]]:
        return read_pairs(path, self.source_column, self.target_column)

    def texts(self) -> tuple[list[str], list[str]]:
        """Training and validation texts, sources and targets (to adapt a tokenizer)."""
        out = []
        for path in (self.train, self.val):
            pairs = self._pairs(path)
            out.append([s for s, _ in pairs] + [t for _, t in pairs])
        return out[0], out[1]

    def encode(self, tokenizer, path: str) -> PairSplit:
        pairs = self._pairs(path)
        sources = encode_texts(tokenizer, [s for s, _ in pairs], self.source_length, "source")
        targets = encode_texts(tokenizer, [t for _, t in pairs], self.target_length, "target")
        return PairSplit(*sources, *targets)

    def _gather(self, split: PairSplit, rows, weights, per_replica: int) -> dict[str, Any]:
        s, t = self.source_length, self.target_length

        def take(array, width):
            return tf.ensure_shape(tf.gather(tf.constant(array), rows), [per_replica, width])

        target_mask = tf.cast(take(split.target_mask, t), tf.float32)
        return {
            "encoder_ids": take(split.source_ids, s),
            "encoder_mask": take(split.source_mask, s),
            "labels": take(split.target_ids, t),
            "loss_weights": target_mask * weights[:, None],
        }
