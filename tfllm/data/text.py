"""Plain-text corpora as deterministic, shardable next-token batches."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfllm.data.blocks import ReplicaLayout, step_dataset, window_features
from tfllm.data.embedded import embedded_corpus
from tfllm.data.splits import Splits
from tfllm.registry import ConfigError, register


def read_documents(path: str | Sequence[str] | None, encoding: str = "utf-8") -> list[str]:
    """Read text files (a file, a directory of `*.txt`, a glob, or a list); None = embedded."""
    if path is None or path == "":
        return embedded_corpus()
    patterns = [path] if isinstance(path, str) else list(path)
    files: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(str(pattern))
        if os.path.isdir(pattern):
            files.extend(sorted(glob.glob(os.path.join(pattern, "**", "*.txt"), recursive=True)))
        elif any(ch in pattern for ch in "*?["):
            files.extend(sorted(glob.glob(pattern, recursive=True)))
        elif os.path.isfile(pattern):
            files.append(pattern)
        else:
            raise ConfigError(f"data.path: no such file or directory: {pattern}")
    if not files:
        raise ConfigError(f"data.path: no text files match {path}")
    docs = []
    for f in files:
        with open(f, encoding=encoding, errors="strict") as fh:
            try:
                docs.append(fh.read())
            except UnicodeDecodeError as e:
                raise ConfigError(f"data.path: {f} is not valid {encoding} ({e})") from None
    if not any(d.strip() for d in docs):
        raise ConfigError(f"data.path: {path} holds no text (every file matched is empty)")
    return docs


@register("dataset", "text")
class TextDataset:
    """Text files packed into fixed-length next-token blocks.

    Documents are joined (separated by the tokenizer's `eos` token when it has one); the first
    `train_fraction` of the characters trains and the rest validates (nanoGPT's split). Training
    batches are a pure function of the step: the block order is a stateless shuffle per epoch,
    with a per-epoch offset so block boundaries move. A resumed run therefore sees exactly the
    batches an uninterrupted run would, and every worker can compute its own share of the global
    batch without coordination.

    Args:
        path: file, directory, glob or list of them; None reads the embedded corpus.
        val_path: optional separate validation files (then `train_fraction` is ignored).
        train_fraction: float. Share of the text used for training.
        sequence_length: int. Tokens per example.
        batch_size: int. Global examples per optimizer step (all replicas, all micro-batches).
        seed: int. Shuffle seed.
        encoding: str. Text file encoding.
        sampling: str. `epochs`: every block once per epoch, in a shuffled order, with an
            offset that moves each epoch; `random`: windows at uniformly random positions
            (nanoGPT's `get_batch`). Both are pure functions of the step.
    """

    def __init__(
        self,
        sequence_length: int,
        batch_size: int,
        path: str | list[str] | None = None,
        val_path: str | list[str] | None = None,
        train_fraction: float = 0.9,
        seed: int = 0,
        encoding: str = "utf-8",
        sampling: str = "epochs",
    ):
        if sequence_length <= 0:
            raise ConfigError(f"data.sequence_length must be positive, got {sequence_length}")
        if batch_size <= 0:
            raise ConfigError(f"data.batch_size must be positive, got {batch_size}")
        if not 0.0 < train_fraction <= 1.0:
            raise ConfigError(f"data.train_fraction must be in (0, 1], got {train_fraction}")
        self.path = path
        self.val_path = val_path
        self.sequence_length = sequence_length
        self.batch_size = batch_size
        self.train_fraction = train_fraction
        if sampling not in ("epochs", "random"):
            raise ConfigError(f"data.sampling must be 'epochs' or 'random', got '{sampling}'")
        self.seed = seed
        self.encoding = encoding
        self.sampling = sampling

    # ----- text ---------------------------------------------------------------------------------
    def texts(self) -> tuple[list[str], list[str]]:
        """Training and validation documents."""
        docs = read_documents(self.path, self.encoding)
        if self.val_path:
            return docs, read_documents(self.val_path, self.encoding)
        joined_len = sum(len(d) for d in docs)
        cut = int(joined_len * self.train_fraction)
        train, val, seen = [], [], 0
        for d in docs:
            if seen + len(d) <= cut:
                train.append(d)
            elif seen >= cut:
                val.append(d)
            else:
                train.append(d[: cut - seen])
                val.append(d[cut - seen :])
            seen += len(d)
        return train, val

    def tokenize(self, tokenizer, documents: list[str]) -> np.ndarray:
        eos = tokenizer.eos_id
        pieces: list[np.ndarray] = []
        for doc in documents:
            if not doc:
                continue
            ids = tokenizer(tf.constant([doc])).flat_values.numpy().astype(np.int32)
            pieces.append(ids)
            if eos is not None and len(documents) > 1:
                pieces.append(np.asarray([eos], np.int32))
        return np.concatenate(pieces) if pieces else np.zeros([0], np.int32)

    def token_splits(self, tokenizer) -> Splits[np.ndarray]:
        train_docs, val_docs = self.texts()
        splits = Splits(self.tokenize(tokenizer, train_docs), self.tokenize(tokenizer, val_docs))
        need = self.sequence_length + 1
        if len(splits.train) < need + self.sequence_length:
            raise ConfigError(
                f"data: the training text has {len(splits.train)} tokens, too few for "
                f"data.sequence_length={self.sequence_length}"
            )
        return splits

    # ----- tf.data ------------------------------------------------------------------------------
    def steps_per_epoch(self, num_tokens: int) -> int:
        blocks = (num_tokens - self.sequence_length) // self.sequence_length
        return max(1, blocks // self.batch_size)

    def train_dataset(
        self,
        tokens: np.ndarray,
        input_context: tf.distribute.InputContext,
        start_step: int,
        num_steps: int,
    ) -> tf.data.Dataset:
        """Per-replica batches for optimizer steps `start_step .. start_step + num_steps - 1`.

        Each element is `{"token_ids", "labels", "loss_weights"}` of shape
        `(batch_size / num_replicas, sequence_length)`; the strategy hands consecutive elements
        to this pipeline's replicas.
        """
        t = self.sequence_length
        g = self.batch_size
        layout = ReplicaLayout.of(input_context, g)
        n_blocks = (len(tokens) - t) // t
        if n_blocks < g:
            raise ConfigError(
                f"data: {n_blocks} training blocks of {t} tokens is fewer than data.batch_size={g}"
            )
        steps_per_epoch = n_blocks // g
        token_tensor = tf.constant(tokens, tf.int32)
        seed = self.seed

        def windows(starts):
            idx = starts[:, None] + tf.range(t + 1, dtype=tf.int64)[None, :]  # (b, T+1)
            return window_features(tf.gather(token_tensor, idx), layout.per_replica, t)

        def batch(step, slot):
            begin = (layout.first + slot) * layout.per_replica
            if self.sampling == "random":
                starts = tf.random.stateless_uniform(
                    [g],
                    seed=tf.stack([tf.cast(seed, tf.int64), step]),
                    minval=0,
                    maxval=len(tokens) - t - 1,
                    dtype=tf.int64,
                )  # the whole global batch, so every shard agrees on it
                return windows(starts[begin : begin + layout.per_replica])
            epoch = step // steps_per_epoch
            within = step % steps_per_epoch
            epoch_seed = tf.stack([tf.cast(seed, tf.int64), epoch])
            order = tf.random.experimental.stateless_shuffle(
                tf.range(n_blocks, dtype=tf.int64), seed=epoch_seed
            )
            offset = tf.random.stateless_uniform(
                [], seed=epoch_seed + 1, minval=0, maxval=t, dtype=tf.int64
            )
            blocks = order[within * g + begin : within * g + begin + layout.per_replica]
            return windows(blocks * t + offset)

        return step_dataset(batch, start_step, num_steps, layout.local)

    def eval_dataset(
        self,
        tokens: np.ndarray,
        input_context: tf.distribute.InputContext,
        max_batches: int | None = None,
    ) -> tuple[tf.data.Dataset, int]:
        """Non-overlapping validation blocks in order; returns the dataset and its batch count."""
        t = self.sequence_length
        g = self.batch_size
        layout = ReplicaLayout.of(input_context, g)
        n_blocks = (len(tokens) - 1) // t
        n_batches = n_blocks // g
        if max_batches:
            n_batches = min(n_batches, max_batches)
        token_tensor = tf.constant(tokens, tf.int32)

        def batch(k, slot):
            begin = k * g + (layout.first + slot) * layout.per_replica
            starts = (begin + tf.range(layout.per_replica, dtype=tf.int64)) * t
            idx = starts[:, None] + tf.range(t + 1, dtype=tf.int64)[None, :]  # (b, T+1)
            return window_features(tf.gather(token_tensor, idx), layout.per_replica, t)

        return step_dataset(batch, 0, n_batches, layout.local), n_batches
