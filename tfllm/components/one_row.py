"""Projections of a single row, multiplied as halves of the input on both threads.

TensorFlow's CPU `MatMul` (Eigen) shares a one-row product `(1, D) @ (D, N)` out across its
threads in a way that reads the weights at 5-18 GB/s on a 2-core host; the same product split
over the input dimension into `parts` products of `(1, D/parts) @ (D/parts, N)`, which one
`BatchMatMul` hands out whole to the threads, then summed, took 0.74x the time for the 120
projections of a SmolLM2-135M decode step, and 2.3-2.7x from 2 to 8 rows
(docs/efficiency.md). So the graph-mode decode loop traces its steps inside
`split_one_row_products()`, and `project` takes the split path only when the step has one row.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import keras
import tensorflow as tf

_state = threading.local()


@contextlib.contextmanager
def split_one_row_products(parts: int = 2) -> Iterator[None]:
    """While tracing inside this context, `project` multiplies one-row inputs as `parts`
    products over the input dimension (graph mode; XLA has its own one-row kernels)."""
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts}")
    previous = getattr(_state, "parts", 1)
    _state.parts = parts
    try:
        yield
    finally:
        _state.parts = previous


def project(layer: keras.layers.Dense, x: tf.Tensor) -> tf.Tensor:
    """`layer(x)` for a `Dense` layer and rows `x` `(N, D)`: inside
    `split_one_row_products`, a single row of float32 is multiplied in parts.

    >>> import numpy as np
    >>> dense = keras.layers.Dense(3)
    >>> x = np.ones((1, 4), "float32")
    >>> with split_one_row_products():
    ...     y = project(dense, x)
    >>> bool(np.allclose(y, dense(x), atol=1e-6))
    True
    """
    parts = getattr(_state, "parts", 1)
    if parts == 1:
        return layer(x)
    x = tf.convert_to_tensor(x)
    if not _splittable(layer, x, parts):
        return layer(x)
    rows = x.shape[0]
    if rows is not None:  # known when traced: choose now
        return _in_parts(layer, x, parts) if rows == 1 else layer(x)
    return tf.cond(tf.shape(x)[0] == 1, lambda: _in_parts(layer, x, parts), lambda: layer(x))


def _splittable(layer, x, parts: int) -> bool:
    """A built float32 `Dense` without quantization, over 2-D inputs whose width splits evenly."""
    if not isinstance(layer, keras.layers.Dense) or not layer.built:
        return False
    if getattr(layer, "quantization_mode", None) is not None:
        return False
    depth = x.shape[-1]
    return (
        x.shape.rank == 2
        and x.dtype == tf.float32
        and layer.kernel.dtype == tf.float32
        and depth is not None
        and depth % parts == 0
    )


def _in_parts(layer, x, parts: int):
    depth = x.shape[-1]
    kernel = tf.convert_to_tensor(layer.kernel)  # (D, N); with LoRA, the adapted kernel
    # (P, 1, D/P): one row's parts. Written with -1, not 1: Grappler checks a reshape in
    # the branch `tf.cond` does not take against the rows it would have had.
    pieces = tf.reshape(x, [parts, -1, depth // parts])
    blocks = tf.reshape(kernel, [parts, depth // parts, -1])  # (P, D/P, N), no copy
    y = tf.reduce_sum(tf.matmul(pieces, blocks), axis=0)  # (1, N)
    if layer.use_bias:
        y = y + layer.bias
    return layer.activation(y)
