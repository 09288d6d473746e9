"""Properties a component must keep inside a whole decoder: causality, cached decoding equal to
recomputation, the graph decode loop equal to greedy recomputation, and `.keras` round trips.

Plugin authors call `check_decoder_properties` with their component's spec, exactly as the
built-in attention and positional variants are checked.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf


def _lm(specs: Mapping[str, Any], vocabulary_size: int, seed: int):
    from tfllm.models.decoder import DecoderBackbone
    from tfllm.tasks.causal_lm import CausalLM

    keras.utils.set_random_seed(seed)
    backbone = DecoderBackbone(
        vocabulary_size=vocabulary_size,
        num_layers=2,
        hidden_dim=16,
        num_heads=4,
        max_sequence_length=24,
        **{k: dict(v) for k, v in specs.items() if k != "head"},
    )
    return CausalLM(backbone, head=dict(specs.get("head") or {"name": "lm"}))


def cached_logits(lm, ids, prefill: int = 5, cache_length: int = 20) -> np.ndarray:
    """Logits `(B, T, V)` of `ids` `(B, T)` decoded through `lm`'s KV cache: the first
    `prefill` tokens in one call, then one token a call; equal to `lm(ids)` when caching is
    right."""
    cache = lm.init_cache(ids.shape[0], cache_length)
    logits, cache = lm.call_with_cache(ids[:, :prefill], cache, 0)
    steps = [logits.numpy()]
    for i in range(prefill, ids.shape[1]):
        logits, cache = lm.call_with_cache(ids[:, i : i + 1], cache, i)
        steps.append(logits.numpy())
    return np.concatenate(steps, axis=1)


def check_decoder_properties(
    attention: Mapping[str, Any] | None = None,
    positional: Mapping[str, Any] | None = None,
    ffn: Mapping[str, Any] | None = None,
    norm: Mapping[str, Any] | None = None,
    head: Mapping[str, Any] | None = None,
    atol: float = 1e-4,
    seed: int = 0,
) -> None:
    """Build a tiny causal LM from the given specs (the rest default) and check that

    1. future tokens never change past logits, and a change is seen downstream;
    2. a prefill plus one-token cached steps give the logits of a full recomputation;
    3. the graph decode loop (prefill over a padded buffer, prompts of different lengths)
       produces exactly the greedy tokens of token-by-token recomputation;
    4. a `.keras` save and load gives identical logits.

    Raises:
        AssertionError: naming the property that failed.

    Example:

    >>> check_decoder_properties(attention={"name": "mha", "num_kv_heads": 2},
    ...                          positional={"name": "rope"})  # doctest: +SKIP
    """
    from tfllm.generation.decoder import decode_loop

    specs = {
        k: v
        for k, v in dict(
            attention=attention, positional=positional, ffn=ffn, norm=norm, head=head
        ).items()
        if v is not None
    }
    vocab, t = 37, 12
    lm = _lm(specs, vocab, seed)
    rng = np.random.default_rng(seed)

    ids = rng.integers(0, vocab, (2, t)).astype("int32")
    base = lm(ids).numpy()
    for cut in (0, 5, t - 2):
        changed = ids.copy()
        changed[:, cut + 1 :] = (changed[:, cut + 1 :] + 7) % vocab
        out = lm(changed).numpy()
        if not np.array_equal(out[:, : cut + 1], base[:, : cut + 1]):
            raise AssertionError(f"{specs}: tokens after position {cut} changed its logits")
        if not np.abs(out[:, cut + 1 :] - base[:, cut + 1 :]).max() > 0:
            raise AssertionError(f"{specs}: a changed token had no effect on later logits")

    diff = float(np.abs(cached_logits(lm, ids) - base).max())
    if diff > atol:
        raise AssertionError(f"{specs}: cached decoding differs from recomputation by {diff}")

    prompts = [ids[0, :3].tolist(), ids[1, :6].tolist()]
    new, total = 6, 12
    buffer = np.zeros((2, total), "int32")
    for row, prompt in enumerate(prompts):
        buffer[row, : len(prompt)] = prompt
    loop = tf.function(
        lambda b, lengths: decode_loop(
            lm, b, lengths, new, 0.0, 0, 1.0, 0, tf.constant([-1], tf.int32), 0
        ),
        autograph=False,
    )
    out, lengths = (x.numpy() for x in loop(tf.constant(buffer), tf.constant([3, 6], tf.int32)))
    for row, prompt in enumerate(prompts):
        seq = list(prompt)
        for _ in range(new):
            seq.append(int(np.argmax(lm(np.asarray([seq], "int32")).numpy()[0, -1])))
        got = out[row, : lengths[row]].tolist()
        if got != seq:
            raise AssertionError(
                f"{specs}: the decode loop produced {got}, recomputation {seq} (row {row})"
            )

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "lm.keras")
        lm.save(path)
        loaded = keras.saving.load_model(path)
    if not np.array_equal(loaded(ids).numpy(), base):
        raise AssertionError(f"{specs}: logits changed after a .keras save and load")
