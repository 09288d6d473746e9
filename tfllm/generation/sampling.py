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
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    filtered = filter_logits(logits, temperature, top_k, top_p)
    sampled = tf.random.stateless_categorical(filtered, 1, seed=seed, dtype=tf.int32)[:, 0]
    return tf.where(tf.cast(temperature, tf.float32) > 0.0, sampled, greedy)
