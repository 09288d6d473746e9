"""Beam search as graph ops, for exports: the rules of `tfllm.generation.beam.beam_search`
(the Python search Python generation runs), batched over rows, with the beam width a tensor."""

from __future__ import annotations

from typing import Any, NamedTuple

import tensorflow as tf

NEG_INF = float("-inf")


class BeamResult(NamedTuple):
    """Each row's `num_beams` best hypotheses, best first: `tokens` int32 `(B, K, N)` (the new
    tokens, -1 padded; the stop token kept), `lengths` int32 `(B, K)`, `log_probs` and
    `scores` float32 `(B, K)` (`-inf` where a row has fewer hypotheses)."""

    tokens: tf.Tensor
    lengths: tf.Tensor
    log_probs: tf.Tensor
    scores: tf.Tensor


def _penalized(log_prob, length, length_penalty):
    return log_prob / tf.maximum(tf.cast(length, tf.float32), 1.0) ** length_penalty


def beam_search_graph(
    model: Any,
    prompt_ids,
    num_beams,
    max_new_tokens,
    length_penalty,
    stop_ids,
) -> BeamResult:
    """Beam search from prompts `(B, P)` (all of one length `P`) of `model` (`init_cache` and
    `call_with_cache` over `B * num_beams` rows: row `b`'s beams are rows `b * K .. b * K + K -
    1`).

    Per row and step, as `beam_search` does: every live beam is extended by every token, the
    `2K` best candidates are read in order (ties: the lower beam, then the lower token), a stop
    token moves its hypothesis to the finished list and any other becomes one of the next `K`
    beams until there are `K`; the finished list keeps its `K` best by
    `log_prob / length ** length_penalty`. A row ends when no beam survives or after
    `max_new_tokens` (its live beams then join the finished list), or once no live beam can beat
    the worst of `K` finished ones.

    Args:
        prompt_ids: int32 `(B, P)`, `P >= 1`.
        num_beams, max_new_tokens: int32 scalars, both >= 1.
        length_penalty: float32 scalar.
        stop_ids: int32 `(S,)` tokens that end a hypothesis (-1 for none).
    """
    k = tf.cast(num_beams, tf.int32)
    n = tf.cast(max_new_tokens, tf.int32)
    length_penalty = tf.cast(length_penalty, tf.float32)
    b, p = tf.shape(prompt_ids)[0], tf.shape(prompt_ids)[1]
    rows = b * k
    cache = model.init_cache(rows, p + n)
    logits, cache = model.call_with_cache(
        tf.repeat(prompt_ids, k, axis=0), cache, tf.constant(0, tf.int32), p - 1
    )  # (B*K, 1, V): the last prompt position's
    log_probs = tf.nn.log_softmax(tf.cast(logits[:, 0], tf.float32))  # (B*K, V)
    v = tf.shape(log_probs)[-1]
    first = tf.one_hot(tf.zeros([b], tf.int32), k, on_value=0.0, off_value=NEG_INF)  # (B, K)
    empty = tf.fill(tf.stack([b, k, n]), -1)
    state = dict(
        i=tf.constant(0, tf.int32),
        log_probs=log_probs,
        cache=cache,
        beam_lp=first,  # (B, K) live beams' log-probabilities, -inf where none
        tokens=empty,  # (B, K, N) live beams' tokens
        f_tokens=empty,
        f_lengths=tf.zeros(tf.stack([b, k]), tf.int32),
        f_lp=tf.fill(tf.stack([b, k]), NEG_INF),
        f_score=tf.fill(tf.stack([b, k]), NEG_INF),
        f_count=tf.zeros([b], tf.int32),
        done=tf.zeros([b], tf.bool),
    )
    position = tf.range(2 * k)  # (2K,)

    def merge(f_tokens, f_lengths, f_lp, f_score, tokens, lengths, lp, score):
        """The K best by score of the finished list and new hypotheses (earlier first on ties,
        as a stable sort of the Python list keeps them)."""
        all_score = tf.concat([f_score, score], axis=1)
        order = tf.argsort(all_score, axis=1, direction="DESCENDING", stable=True)[:, :k]

        def take(old, new):
            return tf.gather(tf.concat([old, new], axis=1), order, batch_dims=1)

        return (
            take(f_tokens, tokens),
            take(f_lengths, lengths),
            take(f_lp, lp),
            tf.gather(all_score, order, batch_dims=1),
        )

    def body(s):
        i = s["i"]
        totals = s["beam_lp"][:, :, None] + tf.reshape(s["log_probs"], tf.stack([b, k, v]))
        best = tf.math.top_k(tf.reshape(totals, tf.stack([b, k * v])), k=2 * k)  # (B, 2K)
        lp = best.values
        beam = best.indices // v
        token = best.indices % v
        valid = lp > NEG_INF
        is_stop = tf.reduce_any(token[:, :, None] == stop_ids[None, None, :], axis=-1)
        going = valid & ~is_stop
        before = tf.cumsum(tf.cast(going, tf.int32), axis=1, exclusive=True)  # (B, 2K)
        survive = going & (before < k)
        stopped = valid & is_stop & (before < k)
        # Every candidate's tokens: its parent's, then the new token at position i.
        at_i = tf.one_hot(i, n, on_value=True, off_value=False)  # (N,)
        grown = tf.where(
            at_i[None, None, :], token[:, :, None], tf.gather(s["tokens"], beam, batch_dims=1)
        )  # (B, 2K, N)
        length = tf.fill(tf.shape(lp), i + 1)
        score = _penalized(lp, i + 1, length_penalty)
        f = merge(
            s["f_tokens"],
            s["f_lengths"],
            s["f_lp"],
            s["f_score"],
            grown,
            length,
            tf.where(stopped, lp, NEG_INF),
            tf.where(stopped, score, NEG_INF),
        )
        f_count = tf.minimum(s["f_count"] + tf.reduce_sum(tf.cast(stopped, tf.int32), 1), k)
        alive = tf.reduce_sum(tf.cast(survive, tf.int32), axis=1)  # (B,)
        ending = (alive == 0) | (i + 1 >= n)
        # Ending rows' live beams join the finished list.
        f_end = merge(
            *f,
            grown,
            length,
            tf.where(survive, lp, NEG_INF),
            tf.where(survive, score, NEG_INF),
        )
        best_live = tf.reduce_max(tf.where(survive, lp, NEG_INF), axis=1)  # (B,)
        horizon = tf.where(length_penalty > 0, n, i + 1)
        hopeless = (f_count >= k) & (
            _penalized(best_live, horizon, length_penalty) <= f[3][:, k - 1]
        )
        finished = tuple(
            tf.where(tf.reshape(ending, [-1] + [1] * (len(x.shape) - 1)), e, x)
            for x, e in zip(f, f_end, strict=True)
        )
        keep = s["done"]

        def hold(old, new):
            return tf.where(tf.reshape(keep, [-1] + [1] * (len(new.shape) - 1)), old, new)

        # The next beams: survivors in candidate order, -inf slots after them.
        slot = tf.argsort(tf.where(survive, position, 2 * k + position), axis=1, stable=True)
        slot = slot[:, :k]  # (B, K)
        live = tf.gather(survive, slot, batch_dims=1)
        parents = tf.gather(beam, slot, batch_dims=1)
        beam_lp = tf.where(live, tf.gather(lp, slot, batch_dims=1), NEG_INF)
        tokens = tf.gather(grown, slot, batch_dims=1)
        last = tf.reshape(tf.gather(token, slot, batch_dims=1), [-1, 1])  # (B*K, 1)
        flat_parents = tf.reshape(parents + k * tf.range(b)[:, None], [-1])
        cache = tf.nest.map_structure(lambda t: tf.gather(t, flat_parents, axis=0), s["cache"])
        logits, cache = model.call_with_cache(last, cache, p + i)
        new = dict(
            i=i + 1,
            log_probs=tf.nn.log_softmax(tf.cast(logits[:, -1], tf.float32)),
            cache=cache,
            beam_lp=hold(s["beam_lp"], beam_lp),
            tokens=hold(s["tokens"], tokens),
            f_tokens=hold(s["f_tokens"], finished[0]),
            f_lengths=hold(s["f_lengths"], finished[1]),
            f_lp=hold(s["f_lp"], finished[2]),
            f_score=hold(s["f_score"], finished[3]),
            f_count=hold(s["f_count"], f_count),
            done=keep | ending | hopeless,
        )
        # Shapes as they entered (gathers with dynamic indices forget static sizes).
        return [tf.nest.map_structure(lambda a, z: tf.ensure_shape(z, a.shape), s, new)]

    def cond(s):
        return (s["i"] < n) & ~tf.reduce_all(s["done"])

    s = tf.while_loop(cond, body, [state], maximum_iterations=n)[0]
    return BeamResult(s["f_tokens"], s["f_lengths"], s["f_lp"], s["f_score"])
