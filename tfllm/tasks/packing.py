"""How texts (and text pairs) become one model input: the rule that classification data, Python
inference and the exported graph (`tfllm.export.text_graph.pack_graph`) all follow.

A single text is `[CLS] a [SEP]`; a pair is `[CLS] a [SEP] b [SEP]` with segment ids 0 for the
first part and 1 for the second (bos/eos stand in when the tokenizer has no `[CLS]`/`[SEP]`;
either may be absent). Too long an input is cut as Hugging Face's `longest_first` cuts it: one
token at a time from the end of the longer part (the second part on ties).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def truncate_longest_first(first: int, second: int, budget: int) -> tuple[int, int]:
    """How many tokens of each part `longest_first` keeps within `budget` tokens.

    Example:

    >>> truncate_longest_first(3, 10, 8)
    (3, 5)
    >>> truncate_longest_first(5, 5, 7)
    (4, 3)
    >>> truncate_longest_first(2, 2, 8)
    (2, 2)
    """
    if first + second <= budget:
        return first, second
    short = min(first, second)
    if 2 * short <= budget:  # the shorter part survives whole
        return (first, budget - first) if first == short else (budget - second, second)
    return (budget + 1) // 2, budget // 2


def pad_rows(
    rows: Sequence[Sequence[int]], pad_id: int, width: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Id rows right-padded to `width` (default: the longest, at least 1): `(ids, mask)`, each
    `(N, width)`.

    Example:

    >>> ids, mask = pad_rows([[5, 6, 7], [8]], pad_id=0)
    >>> ids.tolist(), mask.sum(axis=1).tolist()
    ([[5, 6, 7], [8, 0, 0]], [3, 1])
    """
    width = width if width is not None else max([1, *(len(r) for r in rows)])
    ids = np.full((len(rows), width), pad_id, np.int32)
    mask = np.zeros((len(rows), width), bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, True
    return ids, mask


@dataclass
class PackedTexts:
    """Model inputs of a batch: `ids`, `mask` and `segments`, each `(N, sequence_length)`."""

    ids: np.ndarray
    mask: np.ndarray
    segments: np.ndarray


def pack_texts(
    tokenizer,
    texts: Sequence[str],
    pairs: Sequence[str] | None = None,
    sequence_length: int = 128,
) -> PackedTexts:
    """Tokenize, wrap in boundary tokens, cut and pad `texts` (and their `pairs`).

    Raises:
        ValueError: a text encodes to no tokens, `pairs` has another length than `texts`, or
            `sequence_length` leaves no room for text.
    """
    texts = list(texts)
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"{len(pairs)} text pairs for {len(texts)} texts")
    cls, sep = tokenizer.boundary_ids()
    head = [cls] if cls is not None else []
    tail = [sep] if sep is not None else []
    specials = len(head) + len(tail) * (2 if pairs is not None else 1)
    budget = sequence_length - specials
    if budget < (2 if pairs is not None else 1):
        raise ValueError(f"sequence_length={sequence_length} leaves no room for text")
    firsts = tokenizer.encode(texts)["input_ids"] if texts else []
    seconds = tokenizer.encode(list(pairs))["input_ids"] if pairs is not None and texts else None
    rows, firsts_kept = [], []
    for i, a in enumerate(firsts):
        if not a:
            raise ValueError(f"text {i} encodes to no tokens: {texts[i]!r}")
        b = seconds[i] if seconds is not None else []
        if seconds is not None and not b:
            raise ValueError(f"text pair {i} encodes to no tokens: {pairs[i]!r}")
        keep_a, keep_b = truncate_longest_first(len(a), len(b), budget)
        first = head + a[:keep_a] + tail
        rows.append(first + (b[:keep_b] + tail if seconds is not None else []))
        firsts_kept.append(len(first))
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    ids, mask = pad_rows(rows, pad, sequence_length)
    positions = np.arange(sequence_length)[None, :]
    segments = (positions >= np.asarray(firsts_kept, np.int64).reshape(-1, 1)) & mask
    return PackedTexts(ids, mask, segments.astype(np.int32))
