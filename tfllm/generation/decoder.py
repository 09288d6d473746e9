"""Batched, KV-cached generation for causal LMs, as one graph (eager, graph or XLA)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfllm.generation.prompts import (
    Completion,
    crop_prompt,
    cut_at_stops,
    finish_reason,
    new_token_budget,
    prompt_ids,
    stop_tokens,
)
from tfllm.generation.sampling import sample_next
from tfllm.generation.settings import GenerationConfig

# GenerationConfig lives in settings.py.
__all__ = ["LOOP_SIGNATURE", "GenerationConfig", "Generator", "decode_loop"]

# `decode_loop`'s tensors after the model: buffer, prompt lengths, max_new_tokens,
# temperature, top_k, top_p, seed, stop ids, pad id.
LOOP_SIGNATURE = (
    tf.TensorSpec([None, None], tf.int32),
    tf.TensorSpec([None], tf.int32),
    tf.TensorSpec([], tf.int32),
    tf.TensorSpec([], tf.float32),
    tf.TensorSpec([], tf.int32),
    tf.TensorSpec([], tf.float32),
    tf.TensorSpec([], tf.int32),
    tf.TensorSpec([None], tf.int32),
    tf.TensorSpec([], tf.int32),
)


def decode_loop(
    model,
    token_ids,
    prompt_lengths,
    max_new_tokens,
    temperature,
    top_k,
    top_p,
    seed,
    stop_ids,
    pad_id,
    prefill_prompt_only=False,
):
    """The decode loop, written with explicit `tf.while_loop` and static shapes.

    Args:
        model: a causal LM with `init_cache` and `call_with_cache` (taking `logits_at`).
        token_ids: `(B, L)` int32 right-padded prompts; `L` is the buffer length.
        prompt_lengths: `(B,)` int32, each >= 1.
        max_new_tokens: int32 scalar.
        temperature, top_k, top_p: scalars.
        seed: int32 scalar.
        stop_ids: `(S,)` int32 tokens that end a row (kept in the output).
        pad_id: int32 scalar written after a row ends.
        prefill_prompt_only: prefill only the positions every row has a prompt for (a
            data-dependent shape: graph mode only). Otherwise the prefill runs over the whole
            buffer, whose shape is static, as XLA needs.

    Returns:
        `(token_ids (B, L), lengths (B,))`: the filled buffer and each row's total length.
    """
    shape = tf.shape(token_ids)
    b, total = shape[0], shape[1]
    prompt_lengths = tf.cast(prompt_lengths, tf.int32)
    limits = tf.minimum(prompt_lengths + tf.cast(max_new_tokens, tf.int32), total)  # (B,)
    start = tf.reduce_min(prompt_lengths)
    cache = model.init_cache(b, total)
    # Prefill on the whole buffer: static shapes; positions past a row's prompt hold padding
    # whose cache entries are overwritten before any later position can attend to them.
    zero = tf.constant(0, tf.int32)
    if prefill_prompt_only:
        logits, cache = model.call_with_cache(token_ids[:, :start], cache, zero, start - 1)
    else:
        logits, cache = model.call_with_cache(token_ids, cache, zero, start - 1)
    next_logits = logits[:, 0]  # (B, V): the last position every row has a prompt for
    done = limits <= start
    lengths = tf.where(done, limits, total)

    def choose(i, ids, next_logits, done, lengths):
        """Write position `i`'s token: the prompt's where a row still has one, else sampled
        from `next_logits` `(B, V)` (seeded by `i`), pad once a row is done."""
        at = tf.minimum(i, total - 1)  # i == total only when every row is done already
        step_seed = tf.stack([tf.cast(seed, tf.int32), i])
        sampled = sample_next(next_logits, temperature, top_k, top_p, step_seed)  # (B,)
        forced = i < prompt_lengths
        column = tf.gather(ids, at, axis=1)  # (B,)
        token = tf.where(forced, column, sampled)
        token = tf.where(done, tf.cast(pad_id, tf.int32), token)
        token = tf.where(i < total, token, column)  # past the buffer: nothing to write
        indices = tf.stack([tf.range(b), tf.fill([b], at)], axis=-1)  # (B, 2)
        ids = tf.tensor_scatter_nd_update(ids, indices, token)
        is_stop = tf.reduce_any(token[:, None] == stop_ids[None, :], axis=-1)
        finished = ~done & ((~forced & is_stop) | (i + 1 >= limits))
        lengths = tf.where(finished, i + 1, lengths)
        return ids, token, done | finished, lengths

    # The prefill's logits choose the first token; each step then runs the model on the last
    # token written and chooses the next, so no step computes logits nobody reads.
    ids, token, done, lengths = choose(start, token_ids, next_logits, done, lengths)

    def cond(i, ids, token, done, lengths, cache):  # i: the position `token` was written at
        return (i + 1 < total) & ~tf.reduce_all(done)

    def body(i, ids, token, done, lengths, cache):
        logits, cache = model.call_with_cache(token[:, None], cache, i)  # (B, 1, V)
        ids, token, done, lengths = choose(i + 1, ids, logits[:, 0], done, lengths)
        return i + 1, ids, token, done, lengths, cache

    state = (start, ids, token, done, lengths, cache)
    state = tf.while_loop(cond, body, state, maximum_iterations=total)
    return state[1], state[4]


class Generator:
    """Generates text from a causal LM and its tokenizer.

    The decode loop is traced for the shapes it is called with (see `any_shape`);
    `jit_compile=True` compiles it with XLA (much faster on CPU, recompiles per batch size and
    buffer length).

    Args:
        model: a causal LM (e.g. `tfllm.tasks.causal_lm.CausalLM`).
        tokenizer: a `tfllm` tokenizer.
        jit_compile: compile the decode loop with XLA.
        any_shape: trace the loop once for every batch size and buffer length (for a caller
            that generates for a few different shapes once each, like an export's
            validation), not again when a size changes.

    Example:

    >>> gen = Generator(model, tokenizer)  # doctest: +SKIP
    >>> gen.generate(["ROMEO:"], GenerationConfig(max_new_tokens=20))  # doctest: +SKIP
    """

    def __init__(
        self, model, tokenizer, jit_compile: bool = False, any_shape: bool = False
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.jit_compile = jit_compile
        # Every argument is a tensor, so one trace serves all sampling settings. By default
        # the loop is traced for the shapes of its first call, and a size that changes is
        # traced again as unknown (so a batch size that never changes stays known, which saves
        # a few percent of a graph-mode step); `any_shape` traces it once for any batch and
        # length, as the export's loop is.
        self._fn = tf.function(
            lambda *args: decode_loop(model, *args, prefill_prompt_only=not jit_compile),
            input_signature=LOOP_SIGNATURE if any_shape else None,
            reduce_retracing=not any_shape,
            jit_compile=jit_compile,
            autograph=False,
        )

    def start_ids(self, text: str) -> list[int]:
        """Prompt ids by `tfllm.generation.prompts.prompt_ids`: bos (if the tokenizer has one
        and adds it) then the text; never empty."""
        return prompt_ids(self.tokenizer, text)

    def generate_ids(
        self,
        prompts: Sequence[Sequence[int]],
        config: GenerationConfig,
        stop_ids: Sequence[int] = (),
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Generate from id prompts (each cut to the context by rule 3 of
        `tfllm.generation.prompts`; each row writes what fits, rule 4). Returns
        `(buffer (B, L), prompt_lengths, lengths)`."""
        arguments, lengths = self._loop_arguments(prompts, config, stop_ids)
        ids, out_lengths = self._fn(*arguments)
        return ids.numpy(), lengths, out_lengths.numpy()

    def decode_graph(
        self,
        prompts: Sequence[Sequence[int]],
        config: GenerationConfig,
        stop_ids: Sequence[int] = (),
    ) -> Any:
        """The traced decode loop (a `ConcreteFunction`) that `generate_ids` runs for these
        prompts and settings: its graph is what a profile of the loop reads."""
        arguments, _ = self._loop_arguments(prompts, config, stop_ids)
        return self._fn.get_concrete_function(*arguments)

    def _loop_arguments(
        self, prompts: Sequence[Sequence[int]], config: GenerationConfig, stop_ids: Sequence[int]
    ) -> tuple[list[tf.Tensor], np.ndarray]:
        """The decode loop's tensors for `prompts` (cropped, padded into one buffer) and the
        prompt lengths."""
        config.validate()
        context = self.model.max_sequence_length
        rows = [crop_prompt(p, context) for p in prompts]
        lengths = np.asarray([len(r) for r in rows], np.int32)
        total = min(int(lengths.max()) + config.max_new_tokens, context)
        pad = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0
        buf = np.full((len(rows), total), pad, np.int32)
        for i, r in enumerate(rows):
            buf[i, : len(r)] = r
        stops = np.asarray(list(stop_ids) or [-1], np.int32)
        arguments = [
            tf.constant(buf),
            tf.constant(lengths),
            tf.constant(config.max_new_tokens, tf.int32),
            tf.constant(config.temperature, tf.float32),
            tf.constant(config.top_k, tf.int32),
            tf.constant(config.top_p, tf.float32),
            tf.constant(config.seed, tf.int32),
            tf.constant(stops),
            tf.constant(pad, tf.int32),
        ]
        return arguments, lengths

    def complete(
        self, prompts: str | Sequence[str], config: GenerationConfig | None = None
    ) -> list[list[Completion]]:
        """`num_return_sequences` completions per prompt, each with its token ids and finish
        reason. Prompts follow `tfllm.generation.prompts` (the rules every generation path and
        every export share): a prompt too long for the context keeps its last tokens, and a row
        writes at most `max_new_tokens`, fewer when the context is full (`finish_reason`
        `length`)."""
        config = config or GenerationConfig()
        config.validate()
        single = isinstance(prompts, str)
        prompts = [prompts] if single else list(prompts)
        n = config.num_return_sequences
        rows = [self.start_ids(p) for p in prompts for _ in range(n)]
        stop_ids, stop_strings = stop_tokens(self.tokenizer, config.stop, config.stop_at_eos)
        buf, plens, lens = self.generate_ids(rows, config, stop_ids)
        context = self.model.max_sequence_length
        out: list[Completion] = []
        for row in range(len(rows)):
            new = buf[row, plens[row] : lens[row]].tolist()
            full = self.tokenizer.decode(new, skip_special_tokens=True)
            text = cut_at_stops(full, stop_strings)
            budget = new_token_budget(context, int(plens[row]), config.max_new_tokens)
            reason = finish_reason(new, budget, stop_ids, cut=text != full)
            out.append(Completion(text, tuple(new), reason))
        return [out[i * n : (i + 1) * n] for i in range(len(prompts))]

    def generate(
        self, prompts: str | Sequence[str], config: GenerationConfig | None = None
    ) -> list[list[str]]:
        """Completion texts (without the prompt), `num_return_sequences` per prompt: the
        `text` of each of `complete`'s answers."""
        return [[c.text for c in row] for row in self.complete(prompts, config)]
