"""Labelled text from TSV files, for sequence classification."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tfllm.registry import ConfigError, register


@dataclass
class EncodedSplit:
    """One split, tokenized and padded: `ids (N, T)`, `mask (N, T)` and `labels (N,)`."""

    ids: np.ndarray
    mask: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class EncodedSplits:
    train: EncodedSplit
    val: EncodedSplit


@register("dataset", "tsv_classification")
class TSVClassificationDataset:
    """Labelled texts from TSV files with a header, for `task=classify`.

    Each text is wrapped in the tokenizer's `[CLS]`/`[SEP]` (else bos/eos) when it has them,
    cut to `sequence_length` and padded. Training batches are a pure function of the step (a
    stateless shuffle per epoch), so resumed and multi-worker runs see the batches an
    uninterrupted single-worker run would. Validation covers every row once; the last batch is
    padded with zero-weight rows so shapes stay static.

    Args:
        train: the training TSV.
        val: the validation TSV.
        labels: the classes, in order (a row with another label is an error naming the file and
            line); usually `${task.labels}`.
        text_column, label_column: the header names.
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
        self.sequence_length = sequence_length
        self.batch_size = batch_size
        self.seed = seed

    def _rows(self, path: str):
        from tfllm.evaluation.classification import read_labelled_tsv

        return read_labelled_tsv(path, self.labels, self.text_column, self.label_column)

    def texts(self) -> tuple[list[str], list[str]]:
        """Training and validation texts (for adapting an untrained tokenizer)."""
        return [r.text for r in self._rows(self.train)], [r.text for r in self._rows(self.val)]

    def encode(self, tokenizer, path: str) -> EncodedSplit:
        from tfllm.tasks.sentence_embedding import boundary_ids

        rows = self._rows(path)
        cls, sep = boundary_ids(tokenizer)
        inner = self.sequence_length - (cls is not None) - (sep is not None)
        bodies = tokenizer.encode([r.text for r in rows])["input_ids"]
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        ids = np.full((len(rows), self.sequence_length), pad, np.int32)
        mask = np.zeros((len(rows), self.sequence_length), bool)
        for i, body in enumerate(bodies):
            if not body:
                raise ConfigError(f"{rows[i].source}: the text encodes to no tokens")
            seq = ([cls] if cls is not None else []) + body[:inner] + ([sep] if sep else [])
            ids[i, : len(seq)] = seq
            mask[i, : len(seq)] = True
        index = {label: k for k, label in enumerate(self.labels)}
        labels = np.asarray([index[r.label] for r in rows], np.int32)
        return EncodedSplit(ids, mask, labels)

    def token_splits(self, tokenizer) -> EncodedSplits:
        return EncodedSplits(self.encode(tokenizer, self.train), self.encode(tokenizer, self.val))

    def _replica(self, input_context: tf.distribute.InputContext) -> tuple[int, int, int]:
        replicas = input_context.num_replicas_in_sync
        if self.batch_size % replicas:
            raise ConfigError(
                f"data.batch_size={self.batch_size} is not divisible by the {replicas} replicas"
            )
        local = replicas // input_context.num_input_pipelines
        return self.batch_size // replicas, local, input_context.input_pipeline_id * local

    @staticmethod
    def _gather(split: EncodedSplit, rows, weights, per_replica: int, t: int) -> dict[str, Any]:
        ids, mask, labels = (tf.constant(a) for a in (split.ids, split.mask, split.labels))
        return {
            "token_ids": tf.ensure_shape(tf.gather(ids, rows), [per_replica, t]),
            "padding_mask": tf.ensure_shape(tf.gather(mask, rows), [per_replica, t]),
            "labels": tf.ensure_shape(tf.gather(labels, rows), [per_replica]),
            "loss_weights": tf.ensure_shape(weights, [per_replica]),
        }

    def train_dataset(
        self,
        split: EncodedSplit,
        input_context: tf.distribute.InputContext,
        start_step: int,
        num_steps: int,
    ) -> tf.data.Dataset:
        """Per-replica batches for optimizer steps `start_step .. start_step + num_steps - 1`."""
        per_replica, local, first = self._replica(input_context)
        n, g, seed, t = len(split), self.batch_size, self.seed, self.sequence_length
        if n < g:
            raise ConfigError(f"data.train has {n} rows, fewer than data.batch_size={g}")
        steps_per_epoch = n // g

        def batch(step, slot):
            epoch = step // steps_per_epoch
            order = tf.random.experimental.stateless_shuffle(
                tf.range(n, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), epoch])
            )
            begin = (step % steps_per_epoch) * g + (first + slot) * per_replica
            rows = order[begin : begin + per_replica]
            return self._gather(split, rows, tf.ones([per_replica]), per_replica, t)

        steps = tf.data.Dataset.range(start_step, start_step + num_steps)
        ds = steps.flat_map(lambda s: tf.data.Dataset.range(local).map(lambda r: batch(s, r)))
        return ds.prefetch(tf.data.AUTOTUNE)

    def eval_dataset(
        self,
        split: EncodedSplit,
        input_context: tf.distribute.InputContext,
        max_batches: int | None = None,
    ) -> tuple[tf.data.Dataset, int]:
        """Every validation row once, in order; padding rows carry zero weight."""
        per_replica, local, first = self._replica(input_context)
        n, g, t = len(split), self.batch_size, self.sequence_length
        n_batches = (n + g - 1) // g
        if max_batches:
            n_batches = min(n_batches, max_batches)

        def batch(k, slot):
            positions = k * g + (first + slot) * per_replica + tf.range(per_replica, dtype=tf.int64)
            weights = tf.cast(positions < n, tf.float32)
            rows = tf.minimum(positions, n - 1)
            return self._gather(split, rows, weights, per_replica, t)

        ds = tf.data.Dataset.range(n_batches).flat_map(
            lambda k: tf.data.Dataset.range(local).map(lambda r: batch(k, r))
        )
        return ds.prefetch(tf.data.AUTOTUNE), n_batches
