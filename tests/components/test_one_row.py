"""One-row projections in parts (tfllm.components.one_row): the same numbers as the layer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfllm.components.one_row import project, split_one_row_products


def _dense(units=6, depth=8, **kwargs):
    layer = keras.layers.Dense(units, **kwargs)
    layer.build((None, depth))
    return layer


@pytest.mark.parametrize("parts", [2, 4])
@pytest.mark.parametrize("kwargs", [{}, {"use_bias": False}, {"activation": "gelu"}])
def test_one_row_in_parts_equals_the_layer(parts, kwargs):
    layer = _dense(bias_initializer="random_normal", **kwargs)
    x = np.random.default_rng(0).normal(size=(1, 8)).astype("float32")
    with split_one_row_products(parts):
        y = project(layer, x)
    np.testing.assert_allclose(y, layer(x), rtol=1e-5, atol=1e-6)


def test_rows_of_unknown_count_choose_per_call_inside_a_graph():
    """The decode loop's export has a batch of unknown size: one row takes the split path,
    several rows the layer's own product, both correct (Grappler once evaluated the unused
    branch's reshape against the other row count)."""
    layer = _dense()
    calls = []

    @tf.function(input_signature=[tf.TensorSpec((None, 8), tf.float32)])
    def run(x):
        with split_one_row_products():
            calls.append(1)
            return project(layer, x)

    rng = np.random.default_rng(1)
    for rows in (1, 2, 3, 1):
        x = rng.normal(size=(rows, 8)).astype("float32")
        np.testing.assert_allclose(run(x), layer(x), rtol=1e-5, atol=1e-6)
    assert len(calls) == 1  # one trace served every row count


def test_outside_the_context_and_for_other_layers_project_is_the_plain_call():
    layer = _dense()
    x = np.ones((1, 8), "float32")
    np.testing.assert_array_equal(project(layer, x), layer(x))
    odd = _dense(depth=7)  # a width the parts do not divide
    with split_one_row_products(2):
        np.testing.assert_array_equal(
            project(odd, np.ones((1, 7), "float32")), odd(np.ones((1, 7), "float32"))
        )
    quantized = _dense()
    quantized.quantize("int8")
    with split_one_row_products(2):
        np.testing.assert_allclose(project(quantized, x), quantized(x), rtol=1e-6)
    with pytest.raises(ValueError, match="parts"):
        with split_one_row_products(0):
            pass
