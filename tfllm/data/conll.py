"""Token-labelled sentences in CoNLL column format, for token classification."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tfllm.data.rows import RowDataset
from tfllm.registry import ConfigError, register
from tfllm.tasks.tagging import blank_ids, word_token_ids


@dataclass
class TaggedSentence:
    words: list[str]
    tags: list[str]
    source: str  # "path:line" of the first word


def read_conll(path: str, labels: Sequence[str], label_column: int = -1) -> list[TaggedSentence]:
    """Sentences of a CoNLL file: one word per line (whitespace-separated columns, the word
    first and the tag in `label_column`), a blank line between sentences, `-DOCSTART-` lines
    skipped. Errors name the file and line."""
    known = set(labels)
    try:
        handle = open(path, encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    sentences: list[TaggedSentence] = []
    words: list[str] = []
    tags: list[str] = []
    start = 0
    with handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if words:
                    sentences.append(TaggedSentence(words, tags, f"{path}:{start}"))
                words, tags = [], []
                continue
            if len(fields) < 2:
                raise ConfigError(f"{path}:{number}: a word and a tag expected, got {line!r}")
            tag = fields[label_column]
            if tag not in known:
                raise ConfigError(
                    f"{path}:{number}: tag '{tag}' is not one of the configured labels "
                    f"({', '.join(labels)}); set task.labels"
                )
            if not words:
                start = number
            words.append(fields[0])
            tags.append(tag)
    if words:
        sentences.append(TaggedSentence(words, tags, f"{path}:{start}"))
    if not sentences:
        raise ConfigError(f"{path}: no sentences")
    return sentences


@dataclass
class TaggedSplit:
    ids: np.ndarray  # (N, T)
    mask: np.ndarray  # (N, T) real tokens
    labels: np.ndarray  # (N, T) tag of each word's first token
    weights: np.ndarray  # (N, T) 1 on each word's first token

    def __len__(self) -> int:
        return len(self.ids)


@register("dataset", "conll")
class CoNLLDataset(RowDataset):
    """Tagged sentences for `task=token_classify`.

    Each word is tokenized on its own (with a leading space after the first, so subword
    tokenizers see word boundaries); its tag goes to its first token that is not whitespace,
    and only those tokens carry loss (BERT's convention): `tfllm.tasks.tagging`'s rule, which
    Python inference and exports follow too. Sentences are wrapped in
    `[CLS]`/`[SEP]` (else bos/eos) when the tokenizer has them, and cut to `sequence_length`.
    Batching is `RowDataset`'s.

    Args:
        train, val: CoNLL files.
        labels: the tags, in order (usually `${task.labels}`); another tag is an error naming the
            file and line.
        label_column: int. Which column holds the tag (-1: the last, as in CoNLL-2003).
        sequence_length: int. Tokens per sentence, boundary tokens included.
        batch_size: int. Global sentences per optimizer step.
        seed: int. Shuffle seed.
    """

    def __init__(
        self,
        train: str | None = None,
        val: str | None = None,
        labels: Sequence[str] = ("O",),
        label_column: int = -1,
        sequence_length: int = 128,
        batch_size: int = 32,
        seed: int = 0,
    ):
        if not train or not val:
            raise ConfigError("data.train and data.val: both CoNLL files are required")
        if sequence_length < 3:
            raise ConfigError(f"data.sequence_length must be at least 3, got {sequence_length}")
        if batch_size <= 0:
            raise ConfigError(f"data.batch_size must be positive, got {batch_size}")
        self.train = train
        self.val = val
        self.labels = [str(label) for label in labels]
        self.label_column = label_column
        self.sequence_length = sequence_length
        self.batch_size = batch_size
        self.seed = seed

    def _sentences(self, path: str) -> list[TaggedSentence]:
        return read_conll(path, self.labels, self.label_column)

    def texts(self) -> tuple[list[str], list[str]]:
        return tuple(  # type: ignore[return-value]
            [" ".join(s.words) for s in self._sentences(path)] for path in (self.train, self.val)
        )

    def encode(self, tokenizer, path: str) -> TaggedSplit:
        sentences = self._sentences(path)
        cls, sep = tokenizer.boundary_ids()
        t = self.sequence_length
        inner = t - (cls is not None) - (sep is not None)
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        index = {label: k for k, label in enumerate(self.labels)}
        blank = blank_ids(tokenizer)
        n = len(sentences)
        ids = np.full((n, t), pad, np.int32)
        mask = np.zeros((n, t), bool)
        labels = np.zeros((n, t), np.int32)
        weights = np.zeros((n, t), np.float32)
        for row, sentence in enumerate(sentences):
            try:  # words cut by the length carry no loss
                seq, leads = word_token_ids(tokenizer, sentence.words, inner, blank)
            except ValueError as e:
                raise ConfigError(f"{sentence.source}: {e}") from None
            firsts = [(lead, index[tag]) for lead, tag in zip(leads, sentence.tags, strict=False)]
            offset = 1 if cls is not None else 0
            seq = ([cls] if cls is not None else []) + seq + ([sep] if sep is not None else [])
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = True
            for position, label in firsts:
                labels[row, position + offset] = label
                weights[row, position + offset] = 1.0
        return TaggedSplit(ids, mask, labels, weights)

    def _gather(self, split: TaggedSplit, rows, weights, per_replica: int) -> dict[str, Any]:
        t = self.sequence_length

        def take(array):
            return tf.ensure_shape(tf.gather(tf.constant(array), rows), [per_replica, t])

        return {
            "token_ids": take(split.ids),
            "padding_mask": take(split.mask),
            "labels": take(split.labels),
            "loss_weights": take(split.weights) * weights[:, None],
        }
