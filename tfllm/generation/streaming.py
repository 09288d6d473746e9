"""Token-by-token decoding for interactive use: each new token reaches Python as it is made."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import tensorflow as tf

from tfllm.generation.decoder import GenerationConfig
from tfllm.generation.prompts import crop_prompt, new_token_budget
from tfllm.generation.sampling import sample_next


class TokenStreamer:
    """Yields sampled tokens one at a time from a KV-cached causal LM.

    `Generator` runs the whole decode loop inside one graph, which is fastest but returns only
    at the end; chat needs each token as it comes. Here a traced prefill fills the cache and a
    traced one-token step extends it; both have shape-generic signatures, so they are traced
    once per streamer whatever the prompt length.

    Args:
        model: a causal LM with `call_with_cache` and `init_cache`.
        jit_compile: XLA-compile the prefill and the step.

    Example:

    >>> streamer = TokenStreamer(model)  # doctest: +SKIP
    >>> for token in streamer.stream([1, 2, 3], GenerationConfig(max_new_tokens=5)):
    ...     print(token)  # doctest: +SKIP
    """

    def __init__(self, model, jit_compile: bool = False):
        self.model = model
        cache_spec = model.backbone.cache_spec(batch_size=1)
        scalar = lambda dtype: tf.TensorSpec([], dtype)  # noqa: E731
        # One function for the prompt and for each new token (its length is free), so a
        # conversation pays for one trace, not two: on a 30-layer model each costs seconds.
        self._advance = tf.function(
            self._advance_fn,
            input_signature=[
                tf.TensorSpec([1, None], tf.int32),
                cache_spec,
                scalar(tf.int32),
                scalar(tf.float32),
                scalar(tf.int32),
                scalar(tf.float32),
                scalar(tf.int32),
            ],
            autograph=False,
            jit_compile=jit_compile,
        )

    def _advance_fn(self, token_ids, cache, index, temperature, top_k, top_p, seed):
        """Run `token_ids` `(1, T)` at positions `[index, index + T)` and sample the token for
        position `index + T` (seeded by that position, as the decode loop seeds it)."""
        t = tf.shape(token_ids)[1]
        logits, cache = self.model.call_with_cache(token_ids, cache, index, t - 1)  # (1, 1, V)
        position = index + t
        token = sample_next(logits[:, 0], temperature, top_k, top_p, tf.stack([seed, position]))
        return token, cache  # (1,)

    def stream(
        self,
        prompt_ids: Sequence[int],
        config: GenerationConfig,
        stop_ids: Sequence[int] = (),
        yield_stop: bool = False,
    ) -> Iterator[int]:
        """Yield up to `config.max_new_tokens` tokens after `prompt_ids`, as many as fit the
        context (the prompt cut and the length limited as `tfllm.generation.prompts` rules 3-4
        say for every path); a stop id ends the stream (yielded last with `yield_stop`, as the
        generator keeps it in its ids)."""
        config.validate()
        context = self.model.max_sequence_length
        prompt = crop_prompt(prompt_ids, context)
        total = len(prompt) + new_token_budget(context, len(prompt), config.max_new_tokens)
        settings = (
            tf.constant(config.temperature, tf.float32),
            tf.constant(config.top_k, tf.int32),
            tf.constant(config.top_p, tf.float32),
            tf.constant(config.seed, tf.int32),
        )
        cache = self.model.init_cache(1, total)
        ids = tf.constant([prompt], tf.int32)
        start = tf.constant(0, tf.int32)
        stops = set(stop_ids)
        for index in range(len(prompt), total):
            token, cache = self._advance(ids, cache, start, *settings)
            token_id = int(token.numpy()[0])
            if token_id in stops:
                if yield_stop:
                    yield token_id
                return
            yield token_id
            ids, start = tf.constant([[token_id]], tf.int32), tf.constant(index, tf.int32)
