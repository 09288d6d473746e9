"""The `describe` signature: what a client of a served export needs to know about it (its chat
template, special tokens, context, default and largest `max_new_tokens`, stop strings), asked
over TF Serving's Predict, which has no other way to read an export's files (its
GetModelMetadata answers only signature definitions)."""

from __future__ import annotations

import json
from typing import Any

import tensorflow as tf

from tfllm.export.text_graph import tf_assert


def describe_function(entries: dict[str, Any]) -> Any:
    """A traced function for the `describe(keys)` signature over `entries` (JSON-ready values).

    `keys` (string `[N]`) names the entries asked for (an empty batch asks for all of them);
    outputs are `keys` (string `[N]`, the names answered) and `values` (string `[N]`, each the
    entry's value as JSON text). An unknown key fails as INVALID_ARGUMENT, naming those there
    are.

    >>> fn = describe_function({"context": 64, "stop": ["\\n\\n"]})
    >>> out = fn(tf.constant(["stop"]))
    >>> [json.loads(v) for v in out["values"].numpy()]
    [['\\n\\n']]
    >>> [k.decode() for k in fn(tf.constant([], tf.string))["keys"].numpy()]
    ['context', 'stop']
    """
    ordered = sorted(entries)
    names = tf.constant(ordered, tf.string)  # (K,)
    texts = tf.constant([json.dumps(entries[k], ensure_ascii=False) for k in ordered], tf.string)
    unknown = f"keys: an unknown key; this export describes {', '.join(ordered)}"

    def describe(keys):
        # keys: (N,) -> keys (N,) and values (N,); an empty batch stands for every name
        keys = tf.cond(tf.size(keys) > 0, lambda: keys, lambda: names)
        hits = tf.equal(keys[:, None], names[None, :])  # (N, K)
        check = tf_assert(tf.reduce_all(tf.reduce_any(hits, axis=1)), unknown)
        with tf.control_dependencies([check]):
            index = tf.argmax(tf.cast(hits, tf.int32), axis=1, output_type=tf.int32)  # (N,)
        return {"keys": tf.identity(keys), "values": tf.gather(texts, index)}

    return tf.function(
        describe, input_signature=[tf.TensorSpec([None], tf.string, name="keys")], autograph=False
    )
