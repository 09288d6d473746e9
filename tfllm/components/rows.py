"""Slices of the rows of a token batch, as one flat gather.

`tf.gather(ids, tf.ragged.range(starts, limits), batch_dims=1)` says the same thing, but
traces into about a thousand ops of ragged shape broadcasting (half a second each time a
signature is traced, six times in a generator export); the flat form is four ops.
"""

from __future__ import annotations

import tensorflow as tf


def row_slices(ids, starts, lengths):
    """`lengths[b]` values of each row of `ids` from position `starts[b]`: ragged `(B, None)`.

    Args:
        ids: ragged `(B, None)` or dense `(B, T)`; each slice must lie within its row.
        starts, lengths: int32 `(B,)`.

    Returns:
        A ragged tensor with the row-splits dtype of ragged `ids` (int64 for dense ones).

    >>> import tensorflow as tf
    >>> ids = tf.constant([[1, 2, 3], [4, 5, 6]])
    >>> row_slices(ids, tf.constant([1, 0]), tf.constant([2, 1])).to_list()
    [[2, 3], [4]]
    """
    if isinstance(ids, tf.RaggedTensor):
        values = ids.flat_values
        splits = ids.row_splits.dtype
        offsets = tf.cast(ids.row_starts(), tf.int32)  # (B,) where each row's values begin
    else:
        values = tf.reshape(ids, [-1])
        splits = tf.int64
        offsets = tf.range(tf.shape(ids)[0]) * tf.shape(ids)[1]  # (B,)
    first = offsets + starts  # (B,)
    positions = tf.ragged.range(first, first + lengths, row_splits_dtype=splits)  # (B, None)
    return positions.with_flat_values(tf.gather(values, positions.flat_values))
