"""What every next-token corpus shares, in memory or prepared on disk: how a global batch is
split across input pipelines and replicas, how a window of `T + 1` tokens becomes an example,
and how optimizer steps become a `tf.data` pipeline whose batches are a pure function of the
step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

from tfllm.registry import ConfigError


@dataclass(frozen=True)
class ReplicaLayout:
    """This input pipeline's share of a global batch.

    Example:

    >>> layout = ReplicaLayout.of(tf.distribute.InputContext(2, 1, 4), global_batch=8)
    >>> layout.per_replica, layout.local, layout.first
    (2, 2, 2)
    >>> layout.rows(slot=1)  # rows of the global batch the pipeline's second replica takes
    (6, 8)
    """

    per_replica: int  # examples each replica gets per step
    local: int  # replicas this pipeline feeds
    first: int  # the global index of its first replica

    @classmethod
    def of(cls, input_context: tf.distribute.InputContext, global_batch: int) -> ReplicaLayout:
        replicas = input_context.num_replicas_in_sync
        if global_batch % replicas:
            raise ConfigError(
                f"data.batch_size={global_batch} is not divisible by the {replicas} replicas "
                "in sync"
            )
        local = replicas // input_context.num_input_pipelines
        return cls(global_batch // replicas, local, input_context.input_pipeline_id * local)

    def rows(self, slot: int) -> tuple[int, int]:
        """`[begin, end)` of the global batch that local replica `slot` takes."""
        begin = (self.first + slot) * self.per_replica
        return begin, begin + self.per_replica


def window_features(window: tf.Tensor, per_replica: int, sequence_length: int) -> dict:
    """`(b, T + 1)` tokens → the next-token example `{"token_ids", "labels", "loss_weights"}`."""
    # Static shapes: XLA on TPUs compiles one program for one shape.
    window = tf.ensure_shape(window, [per_replica, sequence_length + 1])  # (b, T+1)
    return {
        "token_ids": window[:, :-1],  # (b, T)
        "labels": window[:, 1:],  # (b, T)
        "loss_weights": tf.ones([per_replica, sequence_length], tf.float32),  # (b, T)
    }


def step_dataset(
    batch: Callable[[tf.Tensor, tf.Tensor], dict],
    first_step: int,
    num_steps: int,
    local: int,
) -> tf.data.Dataset:
    """`batch(step, slot)` for steps `first_step ..` and this pipeline's `local` replicas, in the
    order a strategy hands consecutive elements to its replicas."""
    steps = tf.data.Dataset.range(first_step, first_step + num_steps)
    ds = steps.flat_map(lambda s: tf.data.Dataset.range(local).map(lambda r: batch(s, r)))
    return ds.prefetch(tf.data.AUTOTUNE)
