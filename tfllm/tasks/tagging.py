"""How words become a tagger's input, and how word tags become entity spans: the rules that
CoNLL data, Python inference (`TokenClassifier.tag_texts`) and the exported graph
(`tfllm.export.tagger_serving`) follow.

Each word is tokenized on its own, with a leading space after the first, so subword tokenizers
see word boundaries; its tag is read at its first token that is not whitespace. A text is split
into words at ASCII whitespace (`WHITESPACE`), the same in Python and in the graph.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import tensorflow as tf

WHITESPACE = " \t\n\r\f\v"
_WORD = re.compile(f"[^{re.escape(WHITESPACE)}]+")


def split_words(text: str) -> list[tuple[str, int, int]]:
    """`(word, start, end)` of each run of non-whitespace characters (character offsets).

    Example:

    >>> split_words("  Ada  Lovelace\\n")
    [('Ada', 2, 5), ('Lovelace', 7, 15)]
    """
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def graph_words(texts):
    """`split_words` as graph ops: `(words, byte starts, byte ends)`, ragged `(B, W)` each."""
    import tensorflow_text as tf_text

    return tf_text.regex_split_with_offsets(texts, f"[{WHITESPACE}]+")


def spaced_words(words):
    """The flat words `(N,)` of ragged `words` as the tokenizer reads them: a leading space
    before each but the first of its text."""
    return tf.where(
        index_in_row(words) > 0, tf.strings.join([" ", words.flat_values]), words.flat_values
    )


def index_in_row(ragged):
    """The position `(N,)` of each flat value of `ragged` within its row."""
    n = tf.size(ragged.flat_values, out_type=ragged.row_splits.dtype)
    return tf.range(n, dtype=ragged.row_splits.dtype) - tf.gather(
        ragged.row_splits, ragged.value_rowids()
    )


def character_offsets(texts, byte_offsets):
    """Byte offsets into `texts` (one text per offset) as UTF-8 character offsets."""
    prefixes = tf.strings.substr(texts, tf.zeros_like(byte_offsets), byte_offsets)
    return tf.strings.length(prefixes, unit="UTF8_CHAR")


def blank_ids(tokenizer) -> set[int]:
    """Ids of tokens that are only whitespace (a char tokenizer's space): never a word's lead."""
    return {i for i, token in enumerate(tokenizer.get_vocabulary()) if not token.strip()}


def word_token_ids(
    tokenizer, words: Sequence[str], room: int, blank: set[int]
) -> tuple[list[int], list[int]]:
    """`(ids, leads)`: the ids of `words` tokenized one by one, and the position of each word's
    first non-blank token, for the words that fit in `room` tokens (the rest are cut).

    Raises:
        ValueError: a word encodes to no non-blank token.
    """
    if not words:
        return [], []
    pieces = tokenizer.encode([w if k == 0 else " " + w for k, w in enumerate(words)])
    ids: list[int] = []
    leads: list[int] = []
    for word, piece in zip(words, pieces["input_ids"], strict=True):
        lead = next((k for k, i in enumerate(piece) if i not in blank), None)
        if lead is None:
            raise ValueError(f"the word {word!r} encodes to no tokens")
        if len(ids) + len(piece) > room:
            break
        leads.append(len(ids) + lead)
        ids += piece
    return ids, leads


@dataclass
class Entity:
    """A span of words tagged `B-X I-X ...` (or `I-X ...`): its type, the character offsets of
    its first and last word, and the mean score of its words."""

    label: str
    start: int
    end: int
    score: float


def entity_spans(
    tags: Sequence[str], starts: Sequence[int], ends: Sequence[int], scores: Sequence[float]
) -> list[Entity]:
    """BIO word tags to entities: a `B-X`, or an `I-X` that does not continue an `X`, opens one;
    `I-X` after `X` continues it; anything else (`O`, a tag without a `B-`/`I-` prefix) is
    outside every entity.

    Example:

    >>> spans = entity_spans(["B-PER", "I-PER", "O", "I-LOC"], [0, 4, 9, 12], [3, 8, 11, 17],
    ...                      [0.5, 1.0, 1.0, 0.25])
    >>> [(e.label, e.start, e.end, e.score) for e in spans]
    [('PER', 0, 8, 0.75), ('LOC', 12, 17, 0.25)]
    """
    entities: list[Entity] = []
    words: list[float] = []
    previous = ""
    for tag, start, end, score in zip(tags, starts, ends, scores, strict=True):
        kind = tag[2:] if tag[:2] in ("B-", "I-") else ""
        if kind and (tag[:2] == "B-" or kind != previous):
            entities.append(Entity(kind, start, end, 0.0))
            words = []
        if kind:
            entities[-1].end = end
            words.append(score)
            entities[-1].score = sum(words) / len(words)
        previous = kind
    return entities
