"""Questions, contexts and answer spans (SQuAD), for extractive question answering."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tfllm.data.jsonl import records
from tfllm.data.rows import RowDataset
from tfllm.registry import ConfigError, register
from tfllm.tasks.qa_reading import ReadingRule, default_stride, read_windows

log = logging.getLogger(__name__)
_CHUNK = 256  # examples tokenized per graph call


@dataclass
class QAExample:
    question: str
    context: str
    answer: str
    answer_start: int  # character offset in the context
    source: str  # "path: id"


def _example(path: str, where: str, question: Any, context: Any, answers: Any) -> QAExample:
    if not isinstance(question, str) or not question.strip():
        raise ConfigError(f"{path}: {where}: the question is missing or empty")
    if not isinstance(context, str) or not context.strip():
        raise ConfigError(f"{path}: {where}: the context is missing or empty")
    if not answers:
        raise ConfigError(f"{path}: {where}: no answer (unanswerable questions are not supported)")
    text, start = answers[0]
    if not isinstance(start, int) or context[start : start + len(text)] != text:
        raise ConfigError(
            f"{path}: {where}: the answer {text!r} is not at character {start} of the context"
        )
    return QAExample(question, context, text, start, f"{path}: {where}")


def read_squad(path: str) -> list[QAExample]:
    """Examples of a SQuAD v1.1 JSON file (`data/paragraphs/qas`), or of a JSON-lines file with
    `question`, `context` and `answers: {text: [...], answer_start: [...]}` per line (Hugging
    Face's layout). The first answer of each question is its gold span. Errors name the file
    and the question id or line."""
    examples = []
    if path.endswith(".jsonl"):
        for number, row in records(path):
            answers = row.get("answers") or {}
            pairs = list(
                zip(answers.get("text", []), answers.get("answer_start", []), strict=False)
            )
            examples.append(
                _example(path, f"line {number}", row.get("question"), row.get("context"), pairs)
            )
    else:
        try:
            with open(path, encoding="utf-8") as f:
                raw = f.read()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
        try:
            document = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{e.lineno}: not JSON ({e.msg})") from None
        for article in document.get("data", []):
            for paragraph in article.get("paragraphs", []):
                for qa in paragraph.get("qas", []):
                    pairs = [(a.get("text"), a.get("answer_start")) for a in qa.get("answers", [])]
                    where = f"question {qa.get('id', '?')}"
                    examples.append(
                        _example(path, where, qa.get("question"), paragraph.get("context"), pairs)
                    )
    if not examples:
        raise ConfigError(f"{path}: no questions")
    return examples


@dataclass
class QASplit:
    ids: np.ndarray  # (N, T)
    mask: np.ndarray  # (N, T)
    context_mask: np.ndarray  # (N, T)
    start: np.ndarray  # (N,)
    end: np.ndarray  # (N,)

    def __len__(self) -> int:
        return len(self.ids)


@register("dataset", "squad")
class SQuADDataset(RowDataset):
    """Question-context pairs with answer spans, for `task=extractive_qa`.

    Examples are read as `tfllm.tasks.qa_reading` reads them (the rule exports and
    `SpanExtractor.answer` follow): `[CLS] question [SEP] context [SEP]` rows of
    `sequence_length` tokens, the question cut to `max_question_length` tokens, and a context
    too long for one row read in windows overlapping by `stride` tokens. The answer's tokens are
    found from each token's character offsets, so a tokenizer that normalizes text (a
    lower-casing WordPiece) aligns as well as any. Every window that holds the whole answer is a
    row; an answer no window holds (longer than a window) or that covers no token is dropped
    with a warning counting them. Batching is `RowDataset`'s.

    Args:
        train, val: SQuAD v1.1 JSON or JSON-lines files.
        sequence_length: int. Tokens per row.
        max_question_length: int. Question tokens kept.
        stride: int or None. Context tokens that consecutive windows share (None: a quarter of
            `sequence_length`).
        batch_size: int. Global rows per optimizer step.
        seed: int. Shuffle seed.
    """

    def __init__(
        self,
        train: str | None = None,
        val: str | None = None,
        sequence_length: int = 256,
        max_question_length: int = 64,
        stride: int | None = None,
        batch_size: int = 16,
        seed: int = 0,
    ):
        if not train or not val:
            raise ConfigError("data.train and data.val: both SQuAD files are required")
        if sequence_length < 8:
            raise ConfigError(f"data.sequence_length must be at least 8, got {sequence_length}")
        if not 1 <= max_question_length < sequence_length - 4:
            raise ConfigError(
                f"data.max_question_length must be in [1, sequence_length - 4), got "
                f"{max_question_length}"
            )
        if batch_size <= 0:
            raise ConfigError(f"data.batch_size must be positive, got {batch_size}")
        self.train = train
        self.val = val
        self.rule = ReadingRule(
            sequence_length,
            max_question_length,
            default_stride(sequence_length) if stride is None else stride,
        )
        self.batch_size = batch_size
        self.seed = seed

    @property
    def sequence_length(self) -> int:
        return self.rule.sequence_length

    def texts(self) -> tuple[list[str], list[str]]:
        return tuple(  # type: ignore[return-value]
            [t for e in read_squad(path) for t in (e.question, e.context)]
            for path in (self.train, self.val)
        )

    def encode(self, tokenizer, path: str) -> QASplit:
        examples = read_squad(path)
        self.rule.check(tokenizer)
        t = self.sequence_length
        rows, dropped = [], {"cut off": 0, "not aligned": 0}
        for i in range(0, len(examples), _CHUNK):
            chunk = examples[i : i + _CHUNK]
            windows = read_windows(
                tokenizer,
                tf.constant([e.question for e in chunk]),
                tf.constant([e.context for e in chunk]),
                self.rule,
            )
            ids = windows.ids.to_list()
            index = windows.context_index.to_list()
            starts = windows.context.starts.to_list()
            ends = windows.context.ends.to_list()
            owner = windows.example.numpy()
            for j, e in enumerate(chunk):
                first = len(e.context[: e.answer_start].encode("utf-8"))
                last = first + len(e.answer.encode("utf-8"))
                spans = zip(starts[j], ends[j], strict=True)
                inside = [k for k, (a, b) in enumerate(spans) if a < last and b > first]
                if not inside:
                    dropped["not aligned"] += 1
                    continue
                held = 0
                for r in np.flatnonzero(owner == j):
                    where = {k: p for p, k in enumerate(index[r]) if k >= 0}
                    if inside[0] in where and inside[-1] in where:
                        rows.append((ids[r], index[r], where[inside[0]], where[inside[-1]]))
                        held += 1
                dropped["cut off"] += held == 0
        for reason, count in dropped.items():
            if count:
                log.warning("%s: %d of %d answers %s: dropped", path, count, len(examples), reason)
        if not rows:
            raise ConfigError(f"{path}: no answer fits in data.sequence_length={t}")
        n = len(rows)
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        split = QASplit(
            np.full((n, t), pad, np.int32),
            np.zeros((n, t), bool),
            np.zeros((n, t), bool),
            np.zeros(n, np.int32),
            np.zeros(n, np.int32),
        )
        for i, (seq, index, start, end) in enumerate(rows):
            split.ids[i, : len(seq)] = seq
            split.mask[i, : len(seq)] = True
            split.context_mask[i, : len(seq)] = np.asarray(index) >= 0
            split.start[i], split.end[i] = start, end
        return split

    def _gather(self, split: QASplit, rows, weights, per_replica: int) -> dict[str, Any]:
        t = self.sequence_length

        def take(array, shape):
            return tf.ensure_shape(tf.gather(tf.constant(array), rows), shape)

        return {
            "token_ids": take(split.ids, [per_replica, t]),
            "padding_mask": take(split.mask, [per_replica, t]),
            "context_mask": take(split.context_mask, [per_replica, t]),
            "start": take(split.start, [per_replica]),
            "end": take(split.end, [per_replica]),
            "loss_weights": tf.ensure_shape(weights, [per_replica]),
        }
