"""`row_slices` against the ragged gather it replaces, on ragged and dense batches."""

import numpy as np
import tensorflow as tf

from tfllm.components.rows import row_slices


def reference(ids, starts, lengths):
    positions = tf.ragged.range(starts, starts + lengths)
    return tf.gather(ids, positions, batch_dims=1).to_list()


def test_row_slices_equal_the_ragged_gather_on_ragged_and_dense_rows():
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 50, size=n).tolist() for n in (0, 1, 5, 9, 3)]
    ragged = tf.ragged.constant(rows, tf.int32)
    lengths_of = np.asarray([len(r) for r in rows])
    starts = np.asarray([rng.integers(0, n + 1) for n in lengths_of], np.int32)
    lengths = np.asarray(
        [rng.integers(0, n - s + 1) for n, s in zip(lengths_of, starts, strict=True)], np.int32
    )
    got = row_slices(ragged, tf.constant(starts), tf.constant(lengths))
    assert got.to_list() == reference(ragged, starts, lengths)
    assert got.row_splits.dtype == ragged.row_splits.dtype
    dense = tf.constant(rng.integers(0, 50, size=(4, 7)), tf.int32)
    starts, lengths = tf.constant([0, 3, 6, 2]), tf.constant([7, 4, 1, 0])
    got = tf.function(row_slices, autograph=False)(dense, starts, lengths)  # in a graph too
    assert got.to_list() == reference(dense, starts, lengths)
