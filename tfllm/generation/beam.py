"""Beam search with a KV cache, length penalty and n-best lists."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tfllm.generation.prompts import cut_at_stops, encode_prompt, new_token_budget, stop_tokens


@dataclass(frozen=True)
class Hypothesis:
    """One finished (or length-limited) beam.

    Attributes:
        tokens: the new tokens (the stop token included when one ended it).
        log_prob: summed log-probability of `tokens`.
        score: `log_prob / len(tokens) ** length_penalty`, what the beams are ranked by.
    """

    tokens: tuple[int, ...]
    log_prob: float
    score: float


def _penalized(log_prob: float, length: int, length_penalty: float) -> float:
    return log_prob / max(length, 1) ** length_penalty


def beam_search(
    model: Any,
    prompt_ids: Sequence[int],
    num_beams: int = 4,
    max_new_tokens: int = 32,
    length_penalty: float = 1.0,
    stop_ids: Sequence[int] = (),
    num_return_sequences: int = 1,
) -> list[Hypothesis]:
    """The `num_return_sequences` best continuations of `prompt_ids` by beam search.

    Each step extends every live beam by every token, keeps the `num_beams` best by summed
    log-probability, and moves a beam that emits a stop token to the finished list. The search
    ends when `max_new_tokens` are made or when no live beam can still beat the worst of
    `num_beams` finished ones. Hypotheses are ranked by `log_prob / length ** length_penalty`
    (> 0 favours longer outputs; 0 ranks by raw log-probability). The KV cache of each beam is
    gathered along with it, so every step is one cached call for all beams.

    Args:
        model: a causal LM with `init_cache` and `call_with_cache` (or a seq2seq decoder exposing
            the same two methods).
        prompt_ids: the prompt, at least one token.
        num_beams: beams kept per step.
        max_new_tokens: the longest continuation.
        length_penalty: the exponent of the length normalization.
        stop_ids: tokens that end a hypothesis.
        num_return_sequences: how many hypotheses to return (at most `num_beams`).

    Returns:
        Hypotheses, best first.
    """
    if not prompt_ids:
        raise ValueError("beam search needs a prompt of at least one token")
    if num_beams < 1:
        raise ValueError(f"num_beams must be positive, got {num_beams}")
    if not 1 <= num_return_sequences <= num_beams:
        raise ValueError(
            f"num_return_sequences must be in [1, num_beams={num_beams}], "
            f"got {num_return_sequences}"
        )
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    context = int(model.max_sequence_length)
    if len(prompt_ids) + max_new_tokens > context:
        raise ValueError(
            f"prompt ({len(prompt_ids)} tokens) plus max_new_tokens={max_new_tokens} exceed the "
            f"model's context of {context}"
        )
    stops = set(int(s) for s in stop_ids)
    total = len(prompt_ids) + max_new_tokens
    cache = model.init_cache(1, total)
    logits, cache = model.call_with_cache(
        tf.constant([list(prompt_ids)], tf.int32),
        cache,
        tf.constant(0, tf.int32),
        tf.constant(len(prompt_ids) - 1, tf.int32),
    )  # (1, 1, V): the last prompt position's
    log_probs = tf.nn.log_softmax(tf.cast(logits[:, 0], tf.float32)).numpy()  # (1, V)
    beams: list[tuple[tuple[int, ...], float]] = [((), 0.0)]
    finished: list[Hypothesis] = []
    position = len(prompt_ids)
    for step in range(max_new_tokens):
        vocab = log_probs.shape[-1]
        totals = np.asarray([lp for _, lp in beams])[:, None] + log_probs  # (K, V)
        flat = totals.reshape(-1)
        # Enough candidates that num_beams live ones survive even if some stop.
        order = np.argsort(-flat, kind="stable")[: 2 * num_beams]
        survivors: list[tuple[int, tuple[int, ...], float]] = []
        for index in order:
            beam, token = divmod(int(index), vocab)
            tokens = beams[beam][0] + (token,)
            lp = float(flat[index])
            if token in stops:
                finished.append(Hypothesis(tokens, lp, _penalized(lp, len(tokens), length_penalty)))
            else:
                survivors.append((beam, tokens, lp))
            if len(survivors) == num_beams:
                break
        finished.sort(key=lambda h: -h.score)
        finished = finished[:num_beams]
        if not survivors or step == max_new_tokens - 1:
            for _, tokens, lp in survivors:
                finished.append(Hypothesis(tokens, lp, _penalized(lp, len(tokens), length_penalty)))
            break
        if len(finished) >= num_beams:
            # A live beam's log-probability only falls; with length_penalty > 0 its best possible
            # score is at the longest length, otherwise at its current length.
            best_live = max(lp for _, _, lp in survivors)
            length = max_new_tokens if length_penalty > 0 else step + 1
            if _penalized(best_live, length, length_penalty) <= finished[-1].score:
                break
        beams = [(tokens, lp) for _, tokens, lp in survivors]
        parents = tf.constant([beam for beam, _, _ in survivors], tf.int32)
        cache = tf.nest.map_structure(lambda t, p=parents: tf.gather(t, p, axis=0), cache)
        step_tokens = tf.constant([[tokens[-1]] for tokens, _ in beams], tf.int32)
        logits, cache = model.call_with_cache(step_tokens, cache, tf.constant(position, tf.int32))
        log_probs = tf.nn.log_softmax(tf.cast(logits[:, -1], tf.float32)).numpy()  # (K, V)
        position += 1
    finished.sort(key=lambda h: -h.score)
    return finished[:num_return_sequences]


def beam_generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    num_beams: int = 4,
    max_new_tokens: int = 32,
    length_penalty: float = 1.0,
    num_return_sequences: int = 1,
    stop_at_eos: bool = True,
    stop: Sequence[str] = (),
) -> list[list[str]]:
    """Beam-search completions of text prompts (`num_return_sequences` per prompt, best first);
    for an encoder-decoder, outputs for the prompts as sources. Prompts, lengths (what fits)
    and stop strings follow `tfllm.generation.prompts`, as sampling does."""
    from tfllm.generation.seq2seq import Seq2SeqGenerator, is_seq2seq

    if is_seq2seq(model):
        return Seq2SeqGenerator(model, tokenizer).beam(
            prompts,
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
            length_penalty=length_penalty,
            num_return_sequences=num_return_sequences,
            stop_at_eos=stop_at_eos,
            stop=stop,
        )

    context = int(model.max_sequence_length)
    stops, stop_strings = stop_tokens(tokenizer, stop, stop_at_eos)
    out = []
    for prompt in prompts:
        ids = encode_prompt(tokenizer, prompt, context)
        found = beam_search(
            model,
            ids,
            num_beams=num_beams,
            max_new_tokens=new_token_budget(context, len(ids), max_new_tokens),
            length_penalty=length_penalty,
            stop_ids=stops,
            num_return_sequences=num_return_sequences,
        )
        texts = [tokenizer.decode(list(h.tokens), skip_special_tokens=True) for h in found]
        out.append([cut_at_stops(t, stop_strings) for t in texts])
    return out
