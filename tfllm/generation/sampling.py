"""Next-token selection: greedy, temperature, top-k and top-p, as graph ops with tensor knobs.

The knobs are tensors, so one traced graph (and one exported signature) serves every setting.
Randomness is stateless (`seed` plus the decode position), so a seed reproduces a sample
exactly, in eager, graph and XLA modes alike.
"""

from __future__ import annotations

import tensorflow as tf

_NEG = -1e9


def filter_logits(logits, temperature, top_k, top_p):
    """Scale by temperature and mask tokens outside the top-k / nucleus. logits: (B, V) f32."""
    v = tf.shape(logits)[-1]
    logits = logits / tf.maximum(tf.cast(temperature, tf.float32), 1e-6)
    sorted_logits = tf.sort(logits, axis=-1, direction="DESCENDING")  # (B, V)
    # top-k: keep logits >= the k-th largest (k <= 0 keeps all).
    k = tf.cast(top_k, tf.int32)
    k = tf.where(k > 0, tf.minimum(k, v), v)
    kth = tf.gather(sorted_logits, k - 1, axis=-1)[:, None]  # (B, 1)
    logits = tf.where(logits < kth, _NEG, logits)
    # top-p: keep the smallest prefix of sorted tokens whose mass reaches p (at least one).
    probs = tf.nn.softmax(tf.where(sorted_logits < kth, _NEG, sorted_logits), axis=-1)
    mass_before = tf.cumsum(probs, axis=-1, exclusive=True)  # (B, V)
    keep_sorted = mass_before < tf.cast(top_p, tf.float32)
    keep_sorted = tf.concat([tf.ones_like(keep_sorted[:, :1]), keep_sorted[:, 1:]], axis=-1)
    cutoff = tf.reduce_min(tf.where(keep_sorted, sorted_logits, -_NEG), axis=-1)[:, None]
    return tf.where(logits < cutoff, _NEG, logits)


def _mix32(x):
    """A 32-bit integer hash (Wellons' lowbias32): wrapping uint32 arithmetic only."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x = x * tf.constant(0x7FEB352D, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15))
    x = x * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def hash_uniform(shape, seed):
    """Uniform floats in (0, 1) of a 2-D `shape`, a pure function of `seed` `(2,)` and position.

    TensorFlow's stateless generators (Philox, ThreeFry) give different streams under XLA and
    on the CPU kernels; this counter-based hash gives the same bits everywhere, so a seed
    reproduces a sample in eager, graph, XLA and exported graphs alike.
    """
    seed = tf.cast(seed, tf.uint32)
    key = _mix32(_mix32(seed[0] + tf.constant(0x9E3779B9, tf.uint32)) ^ seed[1])
    rows = tf.range(shape[0], dtype=tf.int32)[:, None] * shape[1]
    counter = tf.cast(rows + tf.range(shape[1], dtype=tf.int32)[None, :], tf.uint32)
    bits = _mix32(_mix32(counter ^ key) + key)
    mantissa = tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32)  # 24 random bits
    return (mantissa + 0.5) * (1.0 / (1 << 24))


def sample_next(logits, temperature, top_k, top_p, seed):
    """Pick one token per row. `temperature <= 0` means greedy.

    Args:
        logits: (B, V) float32.
        temperature, top_k, top_p: scalars (tensors or Python numbers).
        seed: int32 `(2,)` stateless seed (vary it per step).

    Returns:
        (B,) int32 token ids.
    """
    logits = tf.cast(logits, tf.float32)
    temperature = tf.cast(temperature, tf.float32)
    top_k, top_p = tf.cast(top_k, tf.int32), tf.cast(top_p, tf.float32)

    def sample():
        # Sorting the vocabulary (what top-k/top-p need) costs more than a small model's
        # forward pass at batch 8: skip it when neither filter is on.
        filtered = tf.cond(
            (top_k > 0) | (top_p < 1.0),
            lambda: filter_logits(logits, temperature, top_k, top_p),
            lambda: logits / tf.maximum(temperature, 1e-6),
        )
        gumbel = -tf.math.log(-tf.math.log(hash_uniform(tf.shape(filtered), seed)))
        return tf.argmax(filtered + gumbel, axis=-1, output_type=tf.int32)

    def greedy():
        return tf.argmax(logits, axis=-1, output_type=tf.int32)

    return tf.cond(temperature > 0.0, sample, greedy)
