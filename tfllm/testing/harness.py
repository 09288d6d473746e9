"""One harness for every component: config round trip, eager, graph and symbolic calls, its
fused-matrix declarations, a training step, `.keras` save/load, and (for tokenizers)
SavedModel export and reload."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfllm.components.matrices import fused_matrices_of


def _assert_close(a, b, atol: float, what: str) -> None:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shapes differ, {a.shape} vs {b.shape}")
    diff = float(np.max(np.abs(a.astype("float64") - b.astype("float64")))) if a.size else 0.0
    if diff > atol:
        raise AssertionError(f"{what}: max abs difference {diff} > {atol}")


def run_layer_test(
    layer_cls: type,
    init_kwargs: Mapping[str, Any],
    input_data: Any,
    call_kwargs: Mapping[str, Any] | None = None,
    expected_output_shape: Sequence[int | None] | None = None,
    call: Callable[[Any, Any], Any] | None = None,
    run_training: bool = True,
    run_saving: bool = True,
    run_mixed_precision: bool = True,
    atol: float = 1e-5,
) -> Any:
    """Check that a component keeps the tfllm layer contract. Raises AssertionError if not.

    Args:
        layer_cls: the registered class.
        init_kwargs: constructor arguments.
        input_data: a numpy array for the first call argument.
        call_kwargs: extra tensor-free call arguments.
        expected_output_shape: the output shape for `input_data` (default: unchecked).
        call: how to invoke the layer, `call(layer, x)`; defaults to `layer(x, **call_kwargs)`.
        run_training: run one `fit` step and check trainable weights change.
        run_saving: save and reload a model holding the layer as `.keras`.
        run_mixed_precision: build under `mixed_bfloat16` and check the output is finite.
        atol: tolerance for equality of outputs.

    Returns:
        The eager output, for further checks.
    """
    call_kwargs = dict(call_kwargs or {})
    invoke = call or (lambda layer, x: layer(x, **call_kwargs))

    # 1. Config round trip, directly and through Keras serialization (the registered name).
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    revived = layer_cls.from_config(config)
    if revived.get_config() != config:
        raise AssertionError(f"{layer_cls.__name__}: get_config does not round-trip")
    serialized = keras.saving.serialize_keras_object(layer)
    if not isinstance(keras.saving.deserialize_keras_object(serialized), layer_cls):
        raise AssertionError(f"{layer_cls.__name__}: is not registered as Keras-serializable")
    for key in init_kwargs:
        if key not in config:
            raise AssertionError(f"{layer_cls.__name__}: get_config() lacks argument '{key}'")

    # 2. Eager call.
    out = invoke(layer, input_data)
    out_np = keras.ops.convert_to_numpy(out)
    if expected_output_shape is not None and tuple(out_np.shape) != tuple(expected_output_shape):
        raise AssertionError(
            f"{layer_cls.__name__}: output shape {out_np.shape}, expected {expected_output_shape}"
        )
    if np.issubdtype(out_np.dtype, np.floating) and not np.all(np.isfinite(out_np)):
        raise AssertionError(f"{layer_cls.__name__}: non-finite output")

    # 2b. Declared fused matrices (what Muon orthogonalizes apart) split the layer's weights.
    try:
        declared = fused_matrices_of(layer)
    except ValueError as e:
        raise AssertionError(f"{layer_cls.__name__}: fused_matrices(): {e}") from e
    own = {w.path for w in layer.weights}
    if set(declared) - own:
        raise AssertionError(
            f"{layer_cls.__name__}: fused_matrices() names weights it does not hold: "
            f"{sorted(set(declared) - own)}"
        )

    # 3. Graph call (traced, as in a SavedModel) gives the same values.
    graph_out = tf.function(lambda x: invoke(layer, x), autograph=False)(
        tf.convert_to_tensor(input_data)
    )
    _assert_close(graph_out, out_np, atol, f"{layer_cls.__name__} graph vs eager")

    # 4. Symbolic call infers the right shape.
    data = np.asarray(input_data)
    inputs = keras.Input(shape=data.shape[1:], dtype=str(data.dtype), batch_size=None)
    symbolic = invoke(layer_cls(**init_kwargs), inputs)
    if tuple(symbolic.shape[1:]) != tuple(out_np.shape[1:]):
        raise AssertionError(
            f"{layer_cls.__name__}: symbolic shape {symbolic.shape} vs eager {out_np.shape}"
        )

    # 5. One training step moves the trainable weights.
    model = keras.Model(inputs, symbolic)
    if run_training and model.trainable_weights:
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        before = [w.numpy().copy() for w in model.trainable_weights]
        target = np.random.default_rng(0).normal(size=out_np.shape).astype("float32")
        history = model.fit(data, target, batch_size=len(data), epochs=1, verbose=0)
        if not np.isfinite(history.history["loss"][0]):
            raise AssertionError(f"{layer_cls.__name__}: training loss is not finite")
        moved = [
            not np.allclose(b, w.numpy())
            for b, w in zip(before, model.trainable_weights, strict=True)
        ]
        if not any(moved):
            raise AssertionError(f"{layer_cls.__name__}: a training step changed no weight")

    # 6. `.keras` save and load reproduce the outputs.
    if run_saving:
        expected = model.predict(data, verbose=0)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "layer.keras")
            model.save(path)
            loaded = keras.saving.load_model(path)
        _assert_close(
            loaded.predict(data, verbose=0),
            expected,
            atol,
            f"{layer_cls.__name__} after .keras reload",
        )

    # 7. Mixed precision builds and runs.
    if run_mixed_precision:
        mixed = layer_cls(**init_kwargs, dtype="mixed_bfloat16")
        mixed_out = keras.ops.convert_to_numpy(invoke(mixed, input_data)).astype("float32")
        if not np.all(np.isfinite(mixed_out)):
            raise AssertionError(f"{layer_cls.__name__}: non-finite output in mixed_bfloat16")
    return out


def run_tokenizer_test(tokenizer: Any, texts: Sequence[str], lossless: bool = True) -> None:
    """Check a tokenizer: config and directory round trips, graph equals eager, decode inverts
    encode (when `lossless`), and a SavedModel with the tokenizer reloads and agrees.

    Raises AssertionError if not.
    """
    from tfllm.components.tokenizers.base import load_tokenizer

    name = type(tokenizer).__name__
    strings = tf.constant(list(texts))
    ids = tokenizer(strings)
    config = tokenizer.get_config()
    revived = type(tokenizer).from_config(config)
    with tempfile.TemporaryDirectory() as assets:  # vocabularies travel as assets, not config
        tokenizer.save_assets(assets)
        revived.load_assets(assets)
    if revived.get_config() != config:
        raise AssertionError(f"{name}: get_config does not round-trip")
    if revived(strings).to_list() != ids.to_list():
        raise AssertionError(f"{name}: a tokenizer rebuilt from its config encodes differently")
    graph_ids = tf.function(lambda s: tokenizer(s), autograph=False)(strings)
    if graph_ids.to_list() != ids.to_list():
        raise AssertionError(f"{name}: graph and eager ids differ")
    max_id = max((max(row) for row in ids.to_list() if row), default=0)
    if max_id >= tokenizer.vocabulary_size:
        raise AssertionError(f"{name}: id {max_id} >= vocabulary_size {tokenizer.vocabulary_size}")
    decoded = [t.decode("utf-8") for t in tokenizer.detokenize(ids).numpy()]
    if lossless and decoded != list(texts):
        bad = next(i for i, (a, b) in enumerate(zip(decoded, texts, strict=True)) if a != b)
        raise AssertionError(f"{name}: decode(encode(s)) != s for {texts[bad]!r}: {decoded[bad]!r}")
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_to_directory(os.path.join(tmp, "tok"))
        loaded = load_tokenizer(os.path.join(tmp, "tok"))
        if loaded(strings).to_list() != ids.to_list():
            raise AssertionError(f"{name}: reloaded tokenizer encodes differently")

        module = tf.Module()
        module.tokenizer = tokenizer

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
        def roundtrip(s):
            t = tokenizer(s)
            return {"ids": t.to_tensor(-1), "text": tokenizer.detokenize(t)}

        module.roundtrip = roundtrip
        tf.saved_model.save(
            module, os.path.join(tmp, "sm"), signatures={"serving_default": roundtrip}
        )
        restored = tf.saved_model.load(os.path.join(tmp, "sm"))
        result = restored.signatures["serving_default"](strings)
        expected = ids.to_tensor(-1).numpy()
        if result["ids"].numpy().tolist() != expected.tolist():
            raise AssertionError(f"{name}: SavedModel ids differ from the layer's")
        texts_back = [t.decode("utf-8") for t in result["text"].numpy()]
        if texts_back != decoded:
            raise AssertionError(f"{name}: SavedModel detokenization differs from the layer's")
