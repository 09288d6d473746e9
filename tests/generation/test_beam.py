"""Beam search: exact on a tiny vocabulary, greedy with one beam, stops and length penalty."""

import itertools

import keras
import numpy as np
import pytest

from tfllm.generation.beam import beam_search
from tfllm.models.decoder import DecoderBackbone
from tfllm.tasks.causal_lm import CausalLM

VOCAB = 6


@pytest.fixture(scope="module")
def lm():
    keras.utils.set_random_seed(3)
    backbone = DecoderBackbone(
        vocabulary_size=VOCAB,
        num_layers=2,
        hidden_dim=16,
        num_heads=2,
        max_sequence_length=16,
        positional={"name": "rope"},
    )
    model = CausalLM(backbone)
    # Sharpen the distribution so that greedy and the best sequence differ more often.
    for w in model.trainable_weights:
        w.assign(w * 8.0)
    return model


def log_probs(model, prompt, continuations):
    """The exact log-probability of each continuation of `prompt` (one batched forward pass)."""
    ids = np.asarray([prompt + list(c) for c in continuations], np.int32)
    logits = model(ids).numpy().astype(np.float64)  # (N, T, V)
    top = logits.max(-1, keepdims=True)
    lp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    return [
        sum(lp[n, len(prompt) + i - 1, t] for i, t in enumerate(c))
        for n, c in enumerate(continuations)
    ]


def test_wide_beams_find_the_exact_best_sequences(lm):
    prompt = [1, 2]
    candidates = list(itertools.product(range(VOCAB), repeat=3))
    exhaustive = sorted(
        zip(log_probs(lm, prompt, candidates), candidates, strict=True), reverse=True
    )
    found = beam_search(
        lm, prompt, num_beams=VOCAB**2, max_new_tokens=3, length_penalty=0.0, num_return_sequences=5
    )
    assert [h.tokens for h in found] == [c for _, c in exhaustive[:5]]
    for h, (lp, _) in zip(found, exhaustive, strict=False):
        assert h.log_prob == pytest.approx(lp, abs=1e-4)


def test_one_beam_is_greedy(lm):
    prompt = [3]
    seq = list(prompt)
    for _ in range(6):
        seq.append(int(np.argmax(lm(np.asarray([seq], np.int32)).numpy()[0, -1])))
    (best,) = beam_search(lm, prompt, num_beams=1, max_new_tokens=6)
    assert list(best.tokens) == seq[1:]


def test_stop_tokens_and_length_penalty(lm):
    found = beam_search(
        lm, [1], num_beams=4, max_new_tokens=5, stop_ids=[0], num_return_sequences=4
    )
    assert len(found) == 4
    for h in found:
        assert 0 not in h.tokens[:-1]  # a stop token ends a hypothesis
        assert h.score == pytest.approx(h.log_prob / len(h.tokens))
        assert h.log_prob == pytest.approx(log_probs(lm, [1], [h.tokens])[0], abs=1e-4)
    assert [h.score for h in found] == sorted((h.score for h in found), reverse=True)
    with pytest.raises(ValueError, match="num_return_sequences"):
        beam_search(lm, [1], num_beams=2, num_return_sequences=3)
    with pytest.raises(ValueError, match="exceed the model's context"):
        beam_search(lm, [1] * 10, max_new_tokens=10)


@pytest.mark.parametrize(
    "num_beams, max_new_tokens, length_penalty",
    [(4, 8, 1.0), (3, 10, 0.0), (2, 6, 2.0), (1, 5, 1.0), (5, 9, -0.5)],
)
def test_graph_beam_search_keeps_the_python_rules(lm, num_beams, max_new_tokens, length_penalty):
    """The exports' beam search (graph ops, a batch of prompts) returns the Python search's
    n-best lists: the same tokens, scores and log-probabilities, best first."""
    import tensorflow as tf

    from tfllm.generation.beam_graph import beam_search_graph

    prompts = [[1, 2], [3, 0], [5, 5]]
    stops = [0, 4]  # sharpened weights: stops are picked and early stopping happens
    got = tf.function(
        lambda: beam_search_graph(
            lm,
            tf.constant(prompts, tf.int32),
            num_beams,
            max_new_tokens,
            length_penalty,
            tf.constant(stops, tf.int32),
        ),
        autograph=False,
    )()
    for row, prompt in enumerate(prompts):
        want = beam_search(
            lm,
            prompt,
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
            length_penalty=length_penalty,
            stop_ids=stops,
            num_return_sequences=num_beams,
        )
        n = len(want)
        lengths = got.lengths[row, :n].numpy()
        assert [tuple(got.tokens[row, h, : lengths[h]].numpy()) for h in range(n)] == [
            h.tokens for h in want
        ]
        np.testing.assert_allclose(got.scores[row, :n], [h.score for h in want], rtol=1e-5)
        np.testing.assert_allclose(got.log_probs[row, :n], [h.log_prob for h in want], rtol=1e-5)
        assert np.all(np.isneginf(got.scores[row, n:].numpy()))
