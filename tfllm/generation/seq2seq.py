"""Generation for encoder-decoder models: encode once, then the causal LM's decode loop."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfllm.generation.decoder import GenerationConfig, Generator, decode_loop
from tfllm.generation.prompts import (
    Completion,
    cut_at_stops,
    finish_reason,
    new_token_budget,
    pack_with_eos,
    stop_tokens,
)

log = logging.getLogger(__name__)


def is_seq2seq(model: Any) -> bool:
    """Whether `model` is an encoder-decoder task (it has `bind`)."""
    return hasattr(model, "bind")


class Seq2SeqGenerator:
    """Outputs of an encoder-decoder (`tfllm.tasks.seq2seq.Seq2SeqLM`) for source texts.

    Each source is tokenized and ended with eos (as in training), the encoder runs once per
    batch, and the decoder runs the same KV-cached, single-graph decode loop as causal LMs
    (greedy, temperature, top-k, top-p, stop tokens), starting from the decoder start token.
    `beam` runs beam search over the same bound decoder.

    Args:
        model: a `Seq2SeqLM`.
        tokenizer: its tokenizer.
        jit_compile: compile the encoder and decode loop with XLA.

    Example:

    >>> gen = Seq2SeqGenerator(model, tokenizer)  # doctest: +SKIP
    >>> gen.generate(["abc"], GenerationConfig(max_new_tokens=8))  # doctest: +SKIP
    [['cba']]
    """

    def __init__(self, model: Any, tokenizer: Any, jit_compile: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.jit_compile = jit_compile

        def run(encoder_ids, encoder_mask, *args):
            return decode_loop(
                model.bind(encoder_ids, encoder_mask), *args, prefill_prompt_only=not jit_compile
            )

        self._fn = tf.function(run, jit_compile=jit_compile, autograph=False, reduce_retracing=True)

    def encode_sources(self, sources: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Padded source ids `(B, S)` (each ended with eos, cut to the model's length) and
        their mask."""
        bodies = self.tokenizer.encode(list(sources))["input_ids"]
        longest = max(len(b) for b in bodies) + (self.tokenizer.eos_id is not None)
        length = max(1, min(longest, self.model.max_sequence_length))
        ids, mask, cut = pack_with_eos(bodies, length, self.tokenizer.eos_id, self.tokenizer.pad_id)
        if cut:
            log.warning("%d of %d source texts were cut to %d tokens", cut, len(bodies), length)
        return ids, mask

    def generate_ids(
        self,
        sources: Sequence[str],
        config: GenerationConfig,
        stop_ids: Sequence[int] = (),
    ) -> list[list[int]]:
        """The new decoder tokens for each source (the stop token included when one ended it):
        at most `max_new_tokens`, and no more than the decoder's positions hold (one is the
        start token), as rule 4 of `tfllm.generation.prompts` says for every path."""
        config.validate()
        encoder_ids, encoder_mask = self.encode_sources(sources)
        b, total = len(sources), 1 + self.budget(config.max_new_tokens)
        pad = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0
        buf = np.full((b, total), pad, np.int32)
        buf[:, 0] = self.model.decoder_start_id
        ids, lengths = self._fn(
            tf.constant(encoder_ids),
            tf.constant(encoder_mask.astype(np.int32)),
            tf.constant(buf),
            tf.ones([b], tf.int32),
            tf.constant(config.max_new_tokens, tf.int32),
            tf.constant(config.temperature, tf.float32),
            tf.constant(config.top_k, tf.int32),
            tf.constant(config.top_p, tf.float32),
            tf.constant(config.seed, tf.int32),
            tf.constant(np.asarray(list(stop_ids) or [-1], np.int32)),
            tf.constant(pad, tf.int32),
        )
        ids, lengths = ids.numpy(), lengths.numpy()
        return [ids[i, 1 : lengths[i]].tolist() for i in range(b)]

    def budget(self, max_new_tokens: int) -> int:
        """How many tokens an output may have: `max_new_tokens`, within the decoder's
        positions after the start token."""
        return new_token_budget(self.model.max_sequence_length, 1, max_new_tokens)

    def complete(
        self, sources: str | Sequence[str], config: GenerationConfig | None = None
    ) -> list[list[Completion]]:
        """Outputs with their token ids and finish reasons, `num_return_sequences` per source
        (samples differ by row)."""
        config = config or GenerationConfig()
        config.validate()
        single = isinstance(sources, str)
        sources = [sources] if single else list(sources)
        n = config.num_return_sequences
        rows = [s for s in sources for _ in range(n)]
        stop_ids, stop_strings = stop_tokens(self.tokenizer, config.stop, config.stop_at_eos)
        generated = self.generate_ids(rows, config, stop_ids)
        budget = self.budget(config.max_new_tokens)
        out = []
        for new in generated:
            full = self.tokenizer.decode(new, skip_special_tokens=True)
            text = cut_at_stops(full, stop_strings)
            reason = finish_reason(new, budget, stop_ids, cut=text != full)
            out.append(Completion(text, tuple(new), reason))
        return [out[i * n : (i + 1) * n] for i in range(len(sources))]

    def generate(
        self, sources: str | Sequence[str], config: GenerationConfig | None = None
    ) -> list[list[str]]:
        """Output texts, `num_return_sequences` per source (`complete`'s texts)."""
        return [[c.text for c in row] for row in self.complete(sources, config)]

    def beam(
        self,
        sources: Sequence[str],
        num_beams: int = 4,
        max_new_tokens: int = 32,
        length_penalty: float = 1.0,
        num_return_sequences: int = 1,
        stop_at_eos: bool = True,
        stop: Sequence[str] = (),
    ) -> list[list[str]]:
        """Beam-search outputs (`num_return_sequences` per source, best first)."""
        from tfllm.generation.beam import beam_search

        stops, stop_strings = stop_tokens(self.tokenizer, stop, stop_at_eos)
        out = []
        for source in sources:
            encoder_ids, encoder_mask = self.encode_sources([source])
            decoder = self.model.bind(encoder_ids, encoder_mask.astype(np.int32))
            found = beam_search(
                decoder,
                [self.model.decoder_start_id],
                num_beams=num_beams,
                max_new_tokens=self.budget(max_new_tokens),
                length_penalty=length_penalty,
                stop_ids=stops,
                num_return_sequences=num_return_sequences,
            )
            out.append(
                [
                    cut_at_stops(
                        self.tokenizer.decode(list(h.tokens), skip_special_tokens=True),
                        stop_strings,
                    )
                    for h in found
                ]
            )
        return out


def make_generator(model: Any, tokenizer: Any, jit_compile: bool = False):
    """The generator for `model`: `Seq2SeqGenerator` for encoder-decoders, else `Generator`.
    Both have `generate(texts, GenerationConfig)`."""
    if is_seq2seq(model):
        return Seq2SeqGenerator(model, tokenizer, jit_compile=jit_compile)
    return Generator(model, tokenizer, jit_compile=jit_compile)
