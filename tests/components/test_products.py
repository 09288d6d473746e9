"""`products.matmul` and `Projection`: the XLA-on-CPU gradient spelling against `tf.matmul`'s."""

import numpy as np
import pytest
import tensorflow as tf

from tfllm.components import products
from tfllm.testing import run_layer_test

rng = np.random.default_rng(0)


def gradients(fn, a, b, jit_compile):
    """The loss, both input gradients and the traced function of `sum(fn(a, b) * w)`."""
    weight = tf.reshape(tf.range(a.shape[0] * b.shape[-1], dtype="float32"), [a.shape[0], -1])
    weight = tf.sin(weight)  # fixed, so two calls compare the same loss

    def step(a, b):
        with tf.GradientTape() as tape:
            tape.watch([a, b])
            loss = tf.reduce_sum(fn(a, b) * weight)
        return [loss, *tape.gradient(loss, [a, b])]

    traced = tf.function(step, jit_compile=jit_compile, autograph=False)
    return [t.numpy() for t in traced(a, b)], traced


@pytest.fixture
def operands():
    a = tf.constant(rng.normal(size=(48, 24)).astype("float32"))
    b = tf.constant(rng.normal(size=(24, 40)).astype("float32"))
    return a, b


def test_under_xla_the_gradients_equal_tf_matmuls_and_the_transpose_is_written_out(operands):
    a, b = operands
    got, traced = gradients(products.matmul, a, b, jit_compile=True)
    want, _ = gradients(tf.matmul, a, b, jit_compile=True)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    assert got[2].shape == (24, 40)
    hlo = traced.experimental_get_compiler_ir(a, b)(stage="hlo")
    assert "opt-barrier" in hlo  # the rewrite is in the compiled step

    products.enabled = False
    try:
        _, plain = gradients(products.matmul, a, b, jit_compile=True)
        assert "opt-barrier" not in plain.experimental_get_compiler_ir(a, b)(stage="hlo")
    finally:
        products.enabled = True


def test_outside_xla_it_is_tf_matmul_bit_for_bit(operands):
    a, b = operands
    got, traced = gradients(products.matmul, a, b, jit_compile=False)
    want, _ = gradients(tf.matmul, a, b, jit_compile=False)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    ops = {op.type for op in traced.get_concrete_function(a, b).graph.get_operations()}
    assert "XlaOptimizationBarrier" not in ops
    eager = products.matmul(a, b).numpy()
    np.testing.assert_array_equal(eager, tf.matmul(a, b).numpy())


def test_batched_gradients_under_xla():
    a = tf.constant(rng.normal(size=(3, 5, 8)).astype("float32"))
    b = tf.constant(rng.normal(size=(3, 8, 6)).astype("float32"))

    def step(fn):
        def run(a, b):
            with tf.GradientTape() as tape:
                tape.watch([a, b])
                loss = tf.reduce_sum(tf.sin(fn(a, b)))
            return tape.gradient(loss, [a, b])

        return [t.numpy() for t in tf.function(run, jit_compile=True)(a, b)]

    for g, w in zip(step(products.matmul), step(tf.matmul), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_projection_through_the_harness_on_tokens_and_on_sequences():
    tokens = rng.normal(size=(6, 16)).astype("float32")
    run_layer_test(products.Projection, {"units": 8}, tokens, expected_output_shape=(6, 8))
    sequences = rng.normal(size=(2, 3, 16)).astype("float32")  # Dense's own path
    run_layer_test(
        products.Projection,
        {"units": 8, "activation": "gelu", "use_bias": False},
        sequences,
        expected_output_shape=(2, 3, 8),
    )


def test_projection_equals_dense_with_the_same_weights_and_trains_the_same_under_xla():
    import keras

    x = rng.normal(size=(12, 16)).astype("float32")
    y = rng.normal(size=(12, 8)).astype("float32")
    models = []
    for cls in (keras.layers.Dense, products.Projection):
        keras.utils.set_random_seed(3)
        model = keras.Sequential([keras.Input((16,)), cls(8, activation="relu")])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=True)
        models.append(model)
    dense, projection = models
    np.testing.assert_array_equal(dense.predict(x, verbose=0), projection.predict(x, verbose=0))
    for model in models:
        model.fit(x, y, batch_size=12, epochs=3, verbose=0)
    for d, p in zip(dense.weights, projection.weights, strict=True):
        np.testing.assert_allclose(d.numpy(), p.numpy(), rtol=1e-5, atol=1e-6)
