"""How extractive question answering reads a question and its context: the one rule that SQuAD
data (`tfllm.data.squad`), Python inference (`SpanExtractor.answer`) and the exported graph
(`tfllm.export.qa_serving`) follow, written once as graph ops.

A context is split into words at whitespace and each word tokenized on its own, with a leading
space after the first (as `tfllm.tasks.tagging` reads words), so every context token knows the
characters it stands for: its offsets are measured with the tokenizer's `piece_lengths` inside
its word, and a word's first and last tokens reach its edges. That makes answers character-exact
whatever the tokenizer normalizes (a lower-casing WordPiece reads cased text).

A question keeps its first `max_question_length` tokens. A row is `[CLS] question [SEP] window
[SEP]` (no `[CLS]`/`[SEP]` where the tokenizer has none); a context longer than one row's room
is read in windows that overlap by `stride` tokens (BERT's document stride), and the answer is
the best span of its best window: spans `start <= end < start + max_answer_length` inside the
context are ranked by `start logit + end logit`, and a span's score is `P(start) * P(end)`, both
softmaxed over its window's context tokens (how Hugging Face's QA pipeline scores).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import tensorflow as tf

from tfllm.components.rows import row_slices
from tfllm.registry import ConfigError
from tfllm.tasks.tagging import graph_words, index_in_row, spaced_words


@dataclass(frozen=True)
class ReadingRule:
    """The row shape of extractive QA: `sequence_length` tokens per row, the question cut to
    `max_question_length` tokens, windows overlapping by `stride` context tokens."""

    sequence_length: int
    max_question_length: int
    stride: int

    @classmethod
    def of_data(cls, data: dict[str, Any]) -> ReadingRule:
        """The rule a run's `data` config (`data=squad`) trained with."""
        length = int(data.get("sequence_length") or 256)
        stride = data.get("stride")
        return cls(
            length,
            int(data.get("max_question_length") or 64),
            int(default_stride(length) if stride is None else stride),
        )

    def check(self, tokenizer) -> None:
        """Raise `ConfigError` naming the `data.` key when no window of `tokenizer`'s rows has
        room for a context token beyond the overlap."""
        if self.max_question_length < 1:
            raise ConfigError(
                f"data.max_question_length must be positive, got {self.max_question_length}"
            )
        if self.stride < 0:
            raise ConfigError(f"data.stride must be >= 0, got {self.stride}")
        room = self.sequence_length - row_specials(tokenizer) - self.max_question_length
        if room <= self.stride:
            raise ConfigError(
                f"data.stride={self.stride} leaves no new context tokens per window: a row of "
                f"data.sequence_length={self.sequence_length} holds {room} context tokens after "
                f"a question of data.max_question_length={self.max_question_length}; make the "
                "stride smaller than that"
            )


def row_specials(tokenizer) -> int:
    """The boundary tokens of a row: `[CLS]` (or bos) before the question, `[SEP]` (or eos)
    after it and after the window, those the tokenizer has."""
    cls, sep = tokenizer.boundary_ids()
    return (cls is not None) + 2 * (sep is not None)


def default_stride(sequence_length: int) -> int:
    """The overlap used when `data.stride` is not given: a quarter of a row."""
    return sequence_length // 4


class ContextTokens(NamedTuple):
    """Ragged `(B, None)` int32 context token ids and the byte offsets `[start, end)` into the
    context of the text each token stands for."""

    ids: tf.RaggedTensor
    starts: tf.RaggedTensor
    ends: tf.RaggedTensor


def context_tokens(tokenizer, contexts) -> ContextTokens:
    """Tokenize `contexts` `(B,)` word by word, with each token's byte offsets."""
    words, word_starts, word_ends = graph_words(contexts)  # (B, W) each
    pieces = tf.cast(tokenizer(spaced_words(words)), tf.int32)  # (N words, None)
    lengths = tf.gather(tf.constant(tokenizer.piece_lengths(), tf.int32), pieces.flat_values)
    ends_flat = tf.cumsum(lengths)  # (P,) bytes through each piece, all words
    through = tf.concat([[0], ends_flat], axis=0)  # (P + 1,)
    splits = tf.cast(pieces.row_splits, tf.int32)
    base = tf.gather(through, splits[:-1])  # (N,) bytes before each word's pieces
    spelled = tf.gather(through, splits[1:]) - base  # (N,) bytes a word's pieces spell
    start_byte = tf.cast(word_starts.flat_values, tf.int32)
    end_byte = tf.cast(word_ends.flat_values, tf.int32)
    # What the pieces spell beyond the word (its leading space) is taken off the front.
    excess = tf.maximum(spelled - (end_byte - start_byte), 0)  # (N,)
    word = tf.cast(pieces.value_rowids(), tf.int32)  # (P,)
    origin = tf.gather(start_byte - excess - base, word)
    low, high = tf.gather(start_byte, word), tf.gather(end_byte, word)
    starts = tf.clip_by_value(origin + ends_flat - lengths, low, high)
    ends = tf.clip_by_value(origin + ends_flat, low, high)
    position = tf.cast(index_in_row(pieces), tf.int32)
    starts = tf.where(position == 0, low, starts)
    ends = tf.where(
        position == tf.gather(tf.cast(pieces.row_lengths(), tf.int32), word) - 1, high, ends
    )

    def per_text(values):
        return tf.RaggedTensor.from_row_splits(
            pieces.with_flat_values(values), words.row_splits
        ).merge_dims(1, 2)  # (B, None)

    return ContextTokens(per_text(pieces.flat_values), per_text(starts), per_text(ends))


class Windows(NamedTuple):
    """The rows a batch of questions and contexts is read as.

    ids: ragged `(R, None)` int32 row ids. context_index: ragged `(R, None)` int32, the context
    token each position holds, -1 outside the context. example: `(R,)` int32, the question each
    row reads. counts: `(B,)` int32 rows per question. question_lengths: `(B,)` int32 question
    tokens kept. context: `ContextTokens` of the contexts.
    """

    ids: tf.RaggedTensor
    context_index: tf.RaggedTensor
    example: tf.Tensor
    counts: tf.Tensor
    question_lengths: tf.Tensor
    context: ContextTokens


def read_windows(tokenizer, questions, contexts, rule: ReadingRule) -> Windows:
    """Questions and contexts `(B,)` as rows of `rule.sequence_length` tokens at most."""
    cls, sep = tokenizer.boundary_ids()
    question = tf.cast(tokenizer(questions), tf.int32)[:, : rule.max_question_length]  # (B, Q)
    context = context_tokens(tokenizer, contexts)
    room = (
        rule.sequence_length - row_specials(tokenizer) - tf.cast(question.row_lengths(), tf.int32)
    )  # (B,)
    step = room - rule.stride
    size = tf.cast(context.ids.row_lengths(), tf.int32)  # (B,)
    beyond = tf.maximum(size - room, 0)
    counts = 1 + (beyond + step - 1) // step  # (B,) windows per context
    window = tf.ragged.range(counts)  # (B, n)
    example = tf.cast(window.value_rowids(), tf.int32)  # (R,)
    begin = window.flat_values * tf.gather(step, example)  # (R,)
    end = tf.minimum(begin + tf.gather(room, example), tf.gather(size, example))
    index = tf.ragged.range(begin, end)  # (R, None) context token of each window position
    tokens = row_slices(tf.gather(context.ids, example), begin, end - begin)  # (R, None)
    asked = tf.gather(question, example)  # (R, Q)
    rows = tf.shape(example, out_type=tf.int64)[0]

    def column(value):
        return tf.RaggedTensor.from_tensor(tf.fill(tf.stack([rows, 1]), value))

    outside = tf.fill(tf.shape(asked.flat_values), -1)
    parts = [(asked, asked.with_flat_values(outside))]
    if cls is not None:
        parts.insert(0, (column(cls), column(-1)))
    if sep is not None:
        parts.append((column(sep), column(-1)))
    parts.append((tokens, index))
    if sep is not None:
        parts.append((column(sep), column(-1)))
    ids = tf.concat([p[0] for p in parts], axis=1)
    context_index = tf.concat([p[1] for p in parts], axis=1)
    asked_lengths = tf.cast(question.row_lengths(), tf.int32)
    return Windows(ids, context_index, example, counts, asked_lengths, context)


class Answers(NamedTuple):
    """The best span per question: `texts` `(B,)` string, `starts`/`ends` `(B,)` int32
    character offsets `[start, end)` into the context, `scores` `(B,)` float32."""

    texts: tf.Tensor
    starts: tf.Tensor
    ends: tf.Tensor
    scores: tf.Tensor


def best_spans(logits, context_mask, max_answer_length: int):
    """The highest-scoring `(start, end)` per row with `start <= end < start + max_answer_length`,
    both inside the context.

    Args:
        logits: `(B, T, 2)` start and end logits.
        context_mask: `(B, T)`, true for context tokens (where answers may lie).

    Returns:
        `(starts (B,), ends (B,))` int32.
    """
    t = tf.shape(logits)[1]
    scores = logits[:, :, 0][:, :, None] + logits[:, :, 1][:, None, :]  # (B, T_start, T_end)
    i = tf.range(t)[:, None]
    j = tf.range(t)[None, :]
    valid = (j >= i) & (j - i < max_answer_length)  # (T, T)
    inside = tf.cast(context_mask, tf.bool)
    valid = valid[None] & inside[:, :, None] & inside[:, None, :]  # (B, T, T)
    scores = tf.where(valid, scores, -1e30)
    flat = tf.argmax(tf.reshape(scores, [tf.shape(logits)[0], -1]), axis=-1, output_type=tf.int32)
    return flat // t, flat % t


def span_answers(logits, windows: Windows, contexts, max_answer_length: int) -> Answers:
    """The best answer of each question from its rows' `(R, T, 2)` logits."""
    index = windows.context_index.to_tensor(default_value=-1)  # (R, T)
    inside = index >= 0
    logits = tf.cast(logits, tf.float32)
    start, end = best_spans(logits, inside, max_answer_length)  # (R,)
    log_p = tf.nn.log_softmax(tf.where(inside[:, :, None], logits, -1e30), axis=1)  # (R, T, 2)
    score = tf.exp(
        tf.gather(log_p[:, :, 0], start, batch_dims=1)
        + tf.gather(log_p[:, :, 1], end, batch_dims=1)
    )  # (R,)
    per_question = tf.RaggedTensor.from_row_lengths(score, windows.counts)  # (B, n)
    best = tf.argmax(per_question.to_tensor(default_value=-1.0), axis=1, output_type=tf.int32)
    row = tf.cast(per_question.row_splits[:-1], tf.int32) + best  # (B,) best row of each
    start_token = tf.gather_nd(index, tf.stack([row, tf.gather(start, row)], axis=1))  # (B,)
    end_token = tf.gather_nd(index, tf.stack([row, tf.gather(end, row)], axis=1))
    offsets = tf.cast(windows.context.starts.row_splits[:-1], tf.int32)  # (B,)
    byte_start = tf.gather(windows.context.starts.flat_values, offsets + start_token)
    byte_end = tf.gather(windows.context.ends.flat_values, offsets + end_token)
    # To characters, widened to whole characters (a byte tokenizer may cut one).
    _, char_bytes = tf.strings.unicode_decode_with_offsets(contexts, "UTF-8")  # (B, C)
    edges = tf.cast(char_bytes.to_tensor(default_value=tf.int32.max), tf.int32)
    starts = tf.searchsorted(edges, byte_start[:, None], side="right")[:, 0] - 1
    ends = tf.searchsorted(edges, byte_end[:, None], side="left")[:, 0]
    texts = tf.strings.substr(contexts, starts, ends - starts, unit="UTF8_CHAR")
    return Answers(texts, starts, ends, tf.gather(score, row))
