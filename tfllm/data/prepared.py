"""Training from prepared datasets (`tfllm data prepare`): token shards streamed from disk."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tfllm.data.blocks import ReplicaLayout, step_dataset, window_features
from tfllm.data.permutation import permute, round_keys
from tfllm.data.prepare import FORMAT, MANIFEST, read_json
from tfllm.data.splits import Splits
from tfllm.data.token_store import TokenStore
from tfllm.registry import ConfigError, register


@dataclass
class PreparedSplit:
    """One split of each prepared dataset of a run, and the mixture weights (they sum to 1)."""

    stores: list[TokenStore]
    weights: list[float]

    def __len__(self) -> int:
        return sum(len(s) for s in self.stores)


def _seed_words(seed: int, *words: int) -> list[int]:
    return [seed & 0xFFFFFFFFFFFFFFFF, *words]


@register("dataset", "prepared")
class PreparedDataset:
    """Next-token blocks streamed from prepared datasets, without loading them.

    Batches are a pure function of the step, as with `data=text`: with `sampling=epochs` each
    epoch visits every block of `sequence_length` tokens once, in an order a keyed permutation
    gives index by index (constant time, however large the corpus), at an offset that moves each
    epoch; with `sampling=random` each example is a window at a random position. Each input
    pipeline (each worker of a multi-worker run) computes the positions of its own rows of the
    global batch and reads only those windows from the shards.

    Several datasets (`path` a list) make a mixture: each example picks its dataset at random
    with probability `weights` (default: in proportion to their training tokens) and a random
    window in it; they must share one tokenizer. Validation reads the held-out documents of
    every dataset, in order.

    Args:
        path: a prepared dataset's directory, or a list of them.
        sequence_length: int. Tokens per example.
        batch_size: int. Global examples per optimizer step.
        weights: optional list of floats, one per path: mixture weights.
        seed: int. Sampling seed.
        sampling: `epochs` (one dataset) or `random`.
    """

    def __init__(
        self,
        path: str | list[str],
        sequence_length: int,
        batch_size: int,
        weights: list[float] | None = None,
        seed: int = 0,
        sampling: str = "epochs",
    ):
        if not path:
            raise ConfigError("data.path: give the directory tfllm data prepare wrote")
        self.path = path
        self.paths = [path] if isinstance(path, str) else list(path)
        if sequence_length <= 0:
            raise ConfigError(f"data.sequence_length must be positive, got {sequence_length}")
        if batch_size <= 0:
            raise ConfigError(f"data.batch_size must be positive, got {batch_size}")
        if sampling not in ("epochs", "random"):
            raise ConfigError(f"data.sampling must be 'epochs' or 'random', got '{sampling}'")
        if sampling == "epochs" and len(self.paths) > 1:
            raise ConfigError(
                "data.sampling=epochs visits one dataset's blocks in turn; a mixture of "
                f"{len(self.paths)} datasets samples windows by weight: use data.sampling=random"
            )
        if weights is not None:
            if len(weights) != len(self.paths) or any(w < 0 for w in weights) or not sum(weights):
                raise ConfigError(
                    f"data.weights: one non-negative weight per data.path entry "
                    f"({len(self.paths)}), not all zero; got {list(weights)}"
                )
        self.weights = weights
        self.sequence_length = sequence_length
        self.batch_size = batch_size
        self.seed = seed
        self.sampling = sampling
        self.manifests = [self._manifest(p) for p in self.paths]
        prints = {m["tokenizer"]["fingerprint"] for m in self.manifests}
        if len(prints) > 1:
            raise ConfigError(
                "data.path: a mixture needs datasets prepared with one tokenizer; these were "
                "prepared with different ones: " + ", ".join(self.paths)
            )

    @staticmethod
    def _manifest(path: str) -> dict:
        file = os.path.join(path, MANIFEST)
        if not tf.io.gfile.exists(file):
            unfinished = tf.io.gfile.exists(os.path.join(path, ".work", "plan.json"))
            raise ConfigError(
                f"data.path: {path} has no {MANIFEST}: "
                + (
                    "its preparation did not finish (run the same tfllm data prepare again)"
                    if unfinished
                    else "it is not a prepared dataset (make one with tfllm data prepare)"
                )
            )
        manifest = read_json(file) if "://" not in path else _read_remote_json(file)
        if manifest.get("format") != FORMAT:
            raise ConfigError(
                f"data.path: {file} is format {manifest.get('format')!r}; this tfllm reads {FORMAT}"
            )
        return manifest

    # ----- the tokenizer --------------------------------------------------------------------
    def prepared_tokenizer(self):
        """The tokenizer the data was prepared with (what a fresh run trains with)."""
        from tfllm.components.tokenizers.base import load_tokenizer

        return load_tokenizer(os.path.join(self.paths[0], "tokenizer"))

    def check_tokenizer(self, tokenizer, where: str) -> None:
        """Raise unless `tokenizer` is the one the data was prepared with."""
        from tfllm.data.prepare import fingerprint_of

        want = self.manifests[0]["tokenizer"]
        got = fingerprint_of(tokenizer)
        if got != want["fingerprint"]:
            raise ConfigError(
                f"data.path: {self.paths[0]} was prepared with a {want['name']} "
                f"({want['vocabulary_size']:,} tokens, fingerprint {want['fingerprint'][:12]}), "
                f"but {where} is a {type(tokenizer).__name__} "
                f"({tokenizer.vocabulary_size:,} tokens, fingerprint {got[:12]}): its token ids "
                "would mean other text. Prepare the data again with that tokenizer "
                "(tfllm data prepare tokenizer=RUN_OR_FOLDER), or train with the one it has"
            )

    def texts(self):
        raise ConfigError(
            "data=prepared is already tokenized: there is no text to train a tokenizer on "
            "(the tokenizer comes with the prepared data)"
        )

    # ----- splits -----------------------------------------------------------------------------
    def _store(self, index: int, split: str) -> TokenStore:
        m = self.manifests[index]
        shards = [
            (os.path.join(self.paths[index], s["file"]), s["tokens"])
            for s in m["splits"][split]["shards"]
        ]
        return TokenStore(shards, m["dtype"])

    def token_splits(self, tokenizer) -> Splits[PreparedSplit]:
        train = [self._store(i, "train") for i in range(len(self.paths))]
        val = [self._store(i, "val") for i in range(len(self.paths))]
        need = 2 * self.sequence_length + 1
        for p, store in zip(self.paths, train, strict=True):
            if len(store) < need:
                raise ConfigError(
                    f"data: {p} has {len(store)} training tokens, too few for "
                    f"data.sequence_length={self.sequence_length}"
                )
        weights = self.weights or [len(s) for s in train]
        total = float(sum(weights))
        val_stores = [s for s in val if len(s)]
        val_all = TokenStore(
            [(p, n) for s in val_stores for p, n in zip(s.paths, _counts(s), strict=True)],
            self.manifests[0]["dtype"],
        )
        return Splits(
            PreparedSplit(train, [w / total for w in weights]), PreparedSplit([val_all], [1.0])
        )

    # ----- tf.data --------------------------------------------------------------------------
    def steps_per_epoch(self, num_tokens: int) -> int:
        blocks = (num_tokens - self.sequence_length) // self.sequence_length
        return max(1, blocks // self.batch_size)

    def window_starts(self, split: PreparedSplit, step: int) -> tuple[np.ndarray, np.ndarray]:
        """`(dataset index, start)` of every row of step `step`'s global batch."""
        t, g = self.sequence_length, self.batch_size
        if self.sampling == "epochs":
            n_blocks = (len(split.stores[0]) - t) // t
            per_epoch = n_blocks // g
            epoch, within = divmod(step, per_epoch)
            key = _seed_words(self.seed, epoch)
            offset = int(round_keys(*key, 1)[0] % np.uint64(t))
            blocks = permute(within * g + np.arange(g), n_blocks, *key)
            return np.zeros(g, np.int64), blocks * t + offset
        rng = np.random.Generator(np.random.Philox(key=_seed_words(self.seed, step)))
        which = np.searchsorted(np.cumsum(split.weights), rng.random(g), side="right")
        which = np.minimum(which, len(split.stores) - 1)
        room = np.asarray([len(s) - t - 1 for s in split.stores], np.int64)
        starts = (rng.random(g) * room[which]).astype(np.int64)
        return which.astype(np.int64), starts

    def train_dataset(
        self,
        split: PreparedSplit,
        input_context: tf.distribute.InputContext,
        start_step: int,
        num_steps: int,
    ) -> tf.data.Dataset:
        """Per-replica batches for optimizer steps `start_step .. start_step + num_steps - 1`
        (elements as `TextDataset.train_dataset`'s)."""
        t, g = self.sequence_length, self.batch_size
        layout = ReplicaLayout.of(input_context, g)
        n_blocks = (len(split.stores[0]) - t) // t
        if self.sampling == "epochs" and n_blocks < g:
            raise ConfigError(
                f"data: {n_blocks} training blocks of {t} tokens is fewer than data.batch_size={g}"
            )

        def read(step, slot):
            which, starts = self.window_starts(split, int(step))
            begin, end = layout.rows(int(slot))
            rows = [
                split.stores[w].read(int(s), t + 1)
                for w, s in zip(which[begin:end], starts[begin:end], strict=True)
            ]
            return np.stack(rows)

        def batch(step, slot):
            window = tf.numpy_function(read, [step, slot], tf.int32, stateful=False)
            return window_features(window, layout.per_replica, t)

        return step_dataset(batch, start_step, num_steps, layout.local)

    def eval_dataset(
        self,
        split: PreparedSplit,
        input_context: tf.distribute.InputContext,
        max_batches: int | None = None,
    ) -> tuple[tf.data.Dataset, int]:
        """Non-overlapping blocks of the held-out documents, in order; the dataset and its
        batch count."""
        t, g = self.sequence_length, self.batch_size
        layout = ReplicaLayout.of(input_context, g)
        store = split.stores[0]
        n_batches = max(0, (len(store) - 1) // t) // g
        if max_batches:
            n_batches = min(n_batches, max_batches)

        def read(k, slot):
            begin, _ = layout.rows(int(slot))
            first = int(k) * g + begin
            return store.read(first * t, layout.per_replica * t + 1)

        def batch(k, slot):
            flat = tf.numpy_function(read, [k, slot], tf.int32, stateful=False)
            flat = tf.ensure_shape(flat, [layout.per_replica * t + 1])
            idx = tf.range(layout.per_replica)[:, None] * t + tf.range(t + 1)[None, :]  # (b, T+1)
            return window_features(tf.gather(flat, idx), layout.per_replica, t)

        return step_dataset(batch, 0, n_batches, layout.local), n_batches


def _counts(store: TokenStore) -> list[int]:
    return [e - s for s, e in zip(store.starts, store.ends, strict=True)]


def _read_remote_json(path: str) -> dict:
    import json

    with tf.io.gfile.GFile(path, "r") as f:
        return json.loads(f.read())
