"""Per-token layers on flattened tokens: `(..., D)` as `(N, D)` for one 2-D matmul.

Keras's `Dense` on a rank-3 input runs `tf.tensordot`, about seventeen graph ops of shape
bookkeeping around one matmul; in a graph-mode decode step (what exports and TF Serving run)
each is paid on every token. Flattening once around a block of per-token layers leaves one
reshape on each side.
"""

from __future__ import annotations

import tensorflow as tf


def flatten_tokens(x):
    """`x` `(..., D)` as `(N, D)` (N: the product of the leading sizes).

    >>> import numpy as np
    >>> flatten_tokens(np.zeros((2, 3, 4), "float32")).shape
    TensorShape([6, 4])
    """
    return tf.reshape(x, [-1, x.shape[-1]])


def unflatten_tokens(y, like):
    """`y` `(N, E)` back to the leading shape of `like` `(..., D)`: `(..., E)`.

    >>> import numpy as np
    >>> x = np.zeros((2, 3, 4), "float32")
    >>> unflatten_tokens(flatten_tokens(x)[:, :2], x).shape
    TensorShape([2, 3, 2])
    """
    return tf.reshape(y, tf.concat([tf.shape(like)[:-1], [y.shape[-1]]], axis=0))
