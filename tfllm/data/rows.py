"""Datasets of independent rows (labelled texts, source-target pairs) batched by step."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfllm.data.splits import Splits
from tfllm.registry import ConfigError


class RowDataset:
    """Batching shared by datasets whose examples are encoded rows of fixed-shape arrays.

    Training batches are a pure function of the step (a stateless shuffle per epoch), so resumed
    and multi-worker runs see the batches an uninterrupted single-worker run would. Validation
    covers every row once, in order; the last batch is filled with zero-weight rows so shapes
    stay static. Subclasses set `batch_size`, `seed` and the `train` and `val` sources, and
    define `encode(tokenizer, source)`, one split's rows, and `_gather(split, rows, weights,
    per_replica)`, the batch dict of the given rows (`weights` are 1 for real rows).
    """

    batch_size: int
    seed: int
    train: Any
    val: Any

    def encode(self, tokenizer: Any, source: Any) -> Any:
        raise NotImplementedError

    def token_splits(self, tokenizer: Any) -> Splits[Any]:
        """The training and validation rows, encoded."""
        return Splits(self.encode(tokenizer, self.train), self.encode(tokenizer, self.val))

    def _gather(self, split: Any, rows, weights, per_replica: int) -> dict[str, Any]:
        raise NotImplementedError

    def _replica(self, input_context: tf.distribute.InputContext) -> tuple[int, int, int]:
        replicas = input_context.num_replicas_in_sync
        if self.batch_size % replicas:
            raise ConfigError(
                f"data.batch_size={self.batch_size} is not divisible by the {replicas} replicas"
            )
        local = replicas // input_context.num_input_pipelines
        return self.batch_size // replicas, local, input_context.input_pipeline_id * local

    def train_dataset(
        self,
        split: Any,
        input_context: tf.distribute.InputContext,
        start_step: int,
        num_steps: int,
    ) -> tf.data.Dataset:
        """Per-replica batches for optimizer steps `start_step .. start_step + num_steps - 1`."""
        per_replica, local, first = self._replica(input_context)
        n, g, seed = len(split), self.batch_size, self.seed
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
            return self._gather(split, rows, tf.ones([per_replica]), per_replica)

        steps = tf.data.Dataset.range(start_step, start_step + num_steps)
        ds = steps.flat_map(lambda s: tf.data.Dataset.range(local).map(lambda r: batch(s, r)))
        return ds.prefetch(tf.data.AUTOTUNE)

    def eval_dataset(
        self,
        split: Any,
        input_context: tf.distribute.InputContext,
        max_batches: int | None = None,
    ) -> tuple[tf.data.Dataset, int]:
        """Every validation row once, in order; padding rows carry zero weight."""
        per_replica, local, first = self._replica(input_context)
        n, g = len(split), self.batch_size
        n_batches = (n + g - 1) // g
        if max_batches:
            n_batches = min(n_batches, max_batches)

        def batch(k, slot):
            positions = k * g + (first + slot) * per_replica + tf.range(per_replica, dtype=tf.int64)
            weights = tf.cast(positions < n, tf.float32)
            rows = tf.minimum(positions, n - 1)
            return self._gather(split, rows, weights, per_replica)

        ds = tf.data.Dataset.range(n_batches).flat_map(
            lambda k: tf.data.Dataset.range(local).map(lambda r: batch(k, r))
        )
        return ds.prefetch(tf.data.AUTOTUNE), n_batches
