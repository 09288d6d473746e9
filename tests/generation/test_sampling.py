"""Next-token selection rules."""

import numpy as np
import tensorflow as tf

from tfllm.generation.sampling import filter_logits, hash_uniform, sample_next

LOGITS = tf.constant([[4.0, 3.0, 2.0, 1.0, 0.0], [0.0, 0.0, 5.0, 0.0, 0.0]])


def kept(filtered):
    return (filtered.numpy() > -1e8).astype(int).tolist()


def test_top_k_keeps_exactly_k_tokens():
    assert kept(filter_logits(LOGITS, 1.0, 2, 1.0))[0] == [1, 1, 0, 0, 0]
    assert kept(filter_logits(LOGITS, 1.0, 0, 1.0))[0] == [1, 1, 1, 1, 1]
    assert kept(filter_logits(LOGITS, 1.0, 99, 1.0))[0] == [1, 1, 1, 1, 1]


def test_top_p_keeps_the_smallest_nucleus():
    probs = tf.nn.softmax(LOGITS[0]).numpy()  # 0.64, 0.24, 0.09, ...
    assert probs[0] < 0.7 < probs[0] + probs[1]
    assert kept(filter_logits(LOGITS, 1.0, 0, 0.7))[0] == [1, 1, 0, 0, 0]
    assert kept(filter_logits(LOGITS, 1.0, 0, 0.5))[0] == [1, 0, 0, 0, 0]  # at least one
    assert kept(filter_logits(LOGITS, 1.0, 0, 1.0))[0] == [1, 1, 1, 1, 1]


def test_zero_temperature_is_greedy_and_sampling_follows_the_distribution():
    seed = tf.constant([1, 2])
    assert sample_next(LOGITS, 0.0, 0, 1.0, seed).numpy().tolist() == [0, 2]
    logits = tf.math.log(tf.constant([[0.7, 0.2, 0.1]] * 4000))
    draws = sample_next(logits, 1.0, 0, 1.0, tf.constant([3, 4])).numpy()
    freq = np.bincount(draws, minlength=3) / len(draws)
    np.testing.assert_allclose(freq, [0.7, 0.2, 0.1], atol=0.03)
    top1 = sample_next(logits, 1.0, 1, 1.0, tf.constant([3, 4])).numpy()
    assert set(top1.tolist()) == {0}


def test_hash_uniform_is_uniform_and_seeded():
    u = hash_uniform(tf.constant([200, 500]), tf.constant([5, 9])).numpy()
    assert 0.0 < u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
    same = hash_uniform(tf.constant([200, 500]), tf.constant([5, 9])).numpy()
    other = hash_uniform(tf.constant([200, 500]), tf.constant([5, 10])).numpy()
    np.testing.assert_array_equal(u, same)
    assert np.abs(u - other).mean() > 0.1
