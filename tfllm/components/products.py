"""Matrix products whose gradients run on XLA's fast CPU dot.

The gradient of `y = a @ b` with respect to `b` is `aᵀ @ dy`: a product that contracts the
leading (row) axis of both operands. XLA's CPU dot runs that form at about half the speed of
the plain one (`results/train_profile.md`: the MLP's down-projection weight gradient 0.75 ms
in XLA against 0.34 ms in graph mode's oneDNN kernel, at the same FLOPs); XLA folds any
`transpose` feeding a dot back into the dot, so spelling it differently changes nothing. Here
the transposed operand is written out first (held apart from the dot by an optimization
barrier) and the product is a plain one: the copy costs less than the slow dot saves (on a
2-core AVX-512 EPYC, the down projection's 0.82-0.90 ms became 0.64-0.66 ms, and the whole
XLA training step of the shakespeare_char recipe 2-3% shorter; docs/efficiency.md).

The rewrite applies only while XLA compiles the graph (`jit_compile=True`) and no GPU is
visible: GPU and TPU dots take transposed operands at full speed, and so do graph mode's
kernels (0.34 ms above). Elsewhere `matmul` is `tf.matmul`, gradients included, bit for
bit. `enabled` turns the rewrite off for comparisons.
"""

from __future__ import annotations

import functools
from typing import Any

import keras
import tensorflow as tf
from tensorflow.compiler.tf2xla.ops import gen_xla_ops
from tensorflow.python.ops import control_flow_util

enabled = True


@functools.cache
def _cpu_only() -> bool:
    return not tf.config.list_logical_devices("GPU") and not tf.config.list_logical_devices("TPU")


def _rewrite_here() -> bool:
    """True while tracing for XLA on a host whose dots are XLA's CPU ones."""
    if not enabled or tf.executing_eagerly():
        return False
    graph = tf.compat.v1.get_default_graph()
    return control_flow_util.GraphOrParentsInXlaContext(graph) and _cpu_only()


def _written_transpose(x: tf.Tensor) -> tf.Tensor:
    """`x` with its last two axes swapped, written out (not folded into the next dot)."""
    return gen_xla_ops.xla_optimization_barrier([tf.linalg.matrix_transpose(x)])[0]


@tf.custom_gradient
def _matmul(a, b):
    def grad(dy):
        # da (..., M, K) = dy (..., M, N) @ bᵀ; db (..., K, N) = aᵀ (..., K, M) @ dy
        return tf.matmul(dy, b, transpose_b=True), tf.matmul(_written_transpose(a), dy)

    return tf.matmul(a, b), grad


def matmul(a: Any, b: Any) -> tf.Tensor:
    """`a @ b`, batched over equal leading axes, as `tf.matmul` computes it.

    Under XLA on a CPU its gradient writes `aᵀ` out first, so both gradient products are
    plain ones.

    >>> import numpy as np
    >>> matmul(np.ones((2, 3), "float32"), np.ones((3, 4), "float32")).shape
    TensorShape([2, 4])
    """
    return _matmul(a, b) if _rewrite_here() else tf.matmul(a, b)


@keras.saving.register_keras_serializable(package="tfllm")
class Projection(keras.layers.Dense):
    """Keras's `Dense` whose kernel product is `matmul` above (same weights, same results).

    Quantized layers take Keras's own quantized path; LoRA's merged kernel is used as in
    `Dense`.

    >>> import numpy as np
    >>> layer = Projection(3, use_bias=False, kernel_initializer="ones")
    >>> layer(np.ones((2, 4), "float32")).numpy().tolist()
    [[4.0, 4.0, 4.0], [4.0, 4.0, 4.0]]
    """

    def quantize(
        self, mode: str | None = None, type_check: bool = True, config: Any = None
    ) -> None:
        # Keras refuses to quantize subclasses of `Dense`: this one adds no weights and its
        # quantized calls are `Dense`'s own, so it quantizes as `Dense` does.
        super().quantize(mode, type_check=False, config=config)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        # inputs (N, D) or (..., D) -> (N, units) or (..., units)
        if len(inputs.shape) != 2:
            return super().call(inputs, training=training)
        x = matmul(inputs, keras.ops.convert_to_tensor(self.kernel))
        if self.bias is not None:
            x = tf.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x
