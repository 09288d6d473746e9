"""Graph pieces every serving module shares: input checks that fail as INVALID_ARGUMENT, the
graph twin of `tfllm.tasks.packing` (texts and pairs to padded model inputs), and the
`tf.Example`s of string features that Classify/Regress signatures read."""

from __future__ import annotations

import tensorflow as tf

from tfllm.components.rows import row_slices


def tf_assert(condition, message: str):
    """An assertion whose failure TF Serving (and `tfllm serve`) returns as INVALID_ARGUMENT,
    with `message` as the error text."""
    return tf.debugging.Assert(condition, [tf.constant(message)])


def valid_utf8(texts):
    """True when every string of `texts` is valid UTF-8."""
    repaired = tf.strings.unicode_transcode(
        texts, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
    )
    return tf.reduce_all(tf.equal(repaired, texts))


def text_checks(texts, what: str, allow_empty: bool = False) -> list:
    """Assertions on a request's string batch: not empty, valid UTF-8, no empty strings."""
    checks = [
        tf_assert(tf.size(texts) > 0, f"{what}: the batch is empty"),
        tf_assert(valid_utf8(texts), f"{what}: a string is not valid UTF-8"),
    ]
    if not allow_empty:
        checks.append(
            tf_assert(tf.reduce_all(tf.strings.length(texts) > 0), f"{what}: a string is empty")
        )
    return checks


def checked_token_ids(tokenizer, texts, what: str):
    """Ragged ids `(B, None)` of checked `texts`; every string must give at least one token."""
    with tf.control_dependencies(text_checks(texts, what)):
        ids = tf.cast(tokenizer(tf.identity(texts)), tf.int32)  # (B, None)
    some = tf_assert(tf.reduce_all(ids.row_lengths() > 0), f"{what}: a string encodes to no tokens")
    with tf.control_dependencies([some]):
        return tf.identity(ids)


def _keep(ids, lengths):
    """The first `lengths[b]` ids of each row of ragged `ids`."""
    return row_slices(ids, tf.zeros_like(lengths), lengths)


def wrap_ids(ids, first: int | None, last: int | None):
    """Ragged ids `(B, None)` with the id `first` before and `last` after each row (either
    may be None: nothing is added there)."""
    column = tf.fill(tf.stack([ids.nrows(), 1]), 0)  # (B, 1)

    def ids_of(value):
        return tf.RaggedTensor.from_tensor(tf.cast(column + value, ids.dtype))

    parts = [ids_of(first)] if first is not None else []
    parts += [ids] + ([ids_of(last)] if last is not None else [])
    return tf.concat(parts, axis=1) if len(parts) > 1 else ids


def pack_graph(tokenizer, texts, pairs, sequence_length: int, pad_id: int):
    """`tfllm.tasks.packing.pack_texts` in the graph.

    Args:
        texts: string `(B,)`; pairs: string `(B,)` or None.

    Returns:
        `(ids, mask, segments)`, each `(B, T)` with `T <= sequence_length` the longest row.
    """
    cls, sep = tokenizer.boundary_ids()
    a = checked_token_ids(tokenizer, texts, "texts")  # (B, None)
    b = tf.shape(texts)[0]
    specials = (cls is not None) + (sep is not None) * (2 if pairs is not None else 1)
    budget = sequence_length - specials
    la = tf.cast(a.row_lengths(), tf.int32)  # (B,)
    if pairs is None:
        parts = [_keep(a, tf.minimum(la, budget))]
    else:
        same = tf_assert(tf.shape(pairs)[0] == b, "text_pairs must have one entry per text")
        with tf.control_dependencies([same]):
            second = checked_token_ids(tokenizer, pairs, "text_pairs")
        lb = tf.cast(second.row_lengths(), tf.int32)
        short_whole = 2 * tf.minimum(la, lb) <= budget
        fits = la + lb <= budget
        keep_a = tf.where(
            fits, la, tf.where(short_whole, tf.where(la <= lb, la, budget - lb), (budget + 1) // 2)
        )
        keep_b = tf.where(
            fits, lb, tf.where(short_whole, tf.where(la <= lb, budget - la, lb), budget // 2)
        )
        parts = [_keep(a, keep_a), _keep(second, keep_b)]
    first_ids = wrap_ids(parts[0], cls, sep)  # (B, None)
    ids = first_ids if pairs is None else tf.concat([first_ids, wrap_ids(parts[1], None, sep)], 1)
    lengths = ids.row_lengths()
    dense = ids.to_tensor(default_value=pad_id)  # (B, T)
    width = tf.shape(dense)[1]
    mask = tf.sequence_mask(lengths, width)  # (B, T)
    segments = tf.cast(
        tf.range(width, dtype=lengths.dtype)[None, :] >= first_ids.row_lengths()[:, None], tf.int32
    )
    segments = tf.where(mask, segments, 0)  # (B, T) 1 on the second text
    return dense, mask, segments


def parse_text_features(inputs, names: list[str]) -> dict:
    """Serialized `tf.Example`s `(B,)` to one string tensor `(B,)` per required bytes feature
    of `names` (a missing, mistyped or unparsable one fails as INVALID_ARGUMENT)."""
    not_empty = tf_assert(tf.size(inputs) > 0, "inputs: the batch is empty")
    with tf.control_dependencies([not_empty]):
        features = {name: tf.io.FixedLenFeature([], tf.string) for name in names}
        return tf.io.parse_example(tf.identity(inputs), features)


def example_bytes(features: dict[str, str]) -> bytes:
    """A serialized `tf.Example` with one bytes feature per `{name: text}`."""
    example = tf.train.Example()
    for name, text in features.items():
        example.features.feature[name].bytes_list.value.append(text.encode("utf-8"))
    return example.SerializeToString()


def cut_at_stops_graph(texts, stops):
    """Each string up to the first occurrence of any of `stops` (the graph twin of
    `tfllm.generation.prompts.cut_at_stops`)."""
    if not stops:
        return texts
    # Every character spelled as a code point, so no stop string is read as regex syntax.
    alternatives = ["".join(f"\\x{{{ord(c):x}}}" for c in s) for s in stops]
    return tf.strings.regex_replace(texts, f"(?s)({'|'.join(alternatives)}).*$", "")
