"""The graph an encoder-decoder serves: sources to outputs (sampled or greedy), and the
log-likelihood of given outputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfllm.export.serving_base import ServingModule
from tfllm.export.serving_module import (
    ExportSettings,
    default_new_tokens,
    export_sampling,
    finish_reasons,
    generate_input_signature,
    max_new_tokens_check,
    sampling_checks,
)
from tfllm.export.text_graph import cut_at_stops_graph, text_checks, tf_assert
from tfllm.generation.beam_graph import beam_search_graph
from tfllm.generation.decoder import LOOP_SIGNATURE, GenerationConfig, decode_loop
from tfllm.generation.prompts import stop_tokens

BEAMS = 4  # the beam width export validation checks

# The encoder's ids and mask `(B, S)`, then `decode_loop`'s tensors after the model: the
# loop's one trace, which every generating signature calls.
SEQ2SEQ_LOOP_SIGNATURE = (
    tf.TensorSpec([None, None], tf.int32),
    tf.TensorSpec([None, None], tf.int32),
    *LOOP_SIGNATURE,
)


class Seq2SeqServing(ServingModule):
    """Signatures of an encoder-decoder (`task=seq2seq`, `span_corruption`, imported T5).

    Sources follow `tfllm.generation.seq2seq.Seq2SeqGenerator`'s rule, as Python generation
    does: each is tokenized and ended with eos, cut to the model's `max_sequence_length`; the
    decoder starts from the model's start token and stops at eos (and single-token stop
    strings); an output ends before the first of the export's stop strings.

    Generation takes the causal LM's inputs and outputs (a source is the prompt), so the same
    clients (`Client.generate`, `tfllm client prompt=...`) serve both families:

    - `serving_default(prompts)`: outputs with the export's settings (`export.max_new_tokens`;
      null: half the decoder's positions, at most 64).
    - `generate(prompts, max_new_tokens, temperature, top_k, top_p, seed)`: every setting per
      request, `max_new_tokens` in [0, `export.max_new_tokens_limit`] (0: the export's
      default); an output has at most what the decoder's positions hold, as in Python.
    - `beam(prompts, num_beams, max_new_tokens, length_penalty)`: beam search by the rules of
      `tfllm.generation.beam.beam_search` (`Seq2SeqGenerator.beam`), `num_beams` within
      `export.max_num_beams`: `completions` string `[B, K]`, best first ("" where a row has
      fewer hypotheses), `scores` (`log_prob / length ** length_penalty`) and `log_probs`
      float32 `[B, K]`, `tokens` int32 `[B, K, N]`, `lengths` int32 `[B, K]`.
    - `score(sources, targets)`: the log-probability of each target (tokenized and ended with
      eos, as training labels are) given its source: `token_log_probs` float32 `[B, T]`,
      `token_ids` int32 `[B, T]` (-1 padded), `lengths` int32 `[B]`, `log_likelihood` `[B]`.
    - `count_tokens(prompts)`: `lengths`, the ids the encoder reads for each source (eos
      included, after the cut to the model's length), for usage counts (the OpenAI API's
      `/v1/completions`). A source is cut, never refused, so the export's `prompt_context` is
      None.

    Generation outputs: `completions` (string `[B]`, the outputs), `tokens` (int32 `[B, N]`,
    the new tokens, -1 padded), `lengths` (int32 `[B]`) and `finish_reasons` (string `[B]`,
    `stop` or `length`).
    """

    def __init__(self, model, tokenizer, settings: ExportSettings):
        super().__init__(model, tokenizer, "tfllm_seq2seq")
        self.settings = settings
        self.safety = settings.safety_filter()
        self.length = int(model.max_sequence_length)
        self.eos_id = tokenizer.eos_id
        self.start_id = int(model.decoder_start_id)
        self.stop_ids, _ = stop_tokens(tokenizer, settings.stop, stop_at_eos=True)
        self.stop_strings = tuple(settings.stop)
        # serving_default's length (one of the decoder's positions is the start token)
        self.default_new_tokens = default_new_tokens(settings, self.length - 1)

        def loop(encoder_ids, encoder_mask, *args):
            decoder = model.bind(encoder_ids, encoder_mask)
            return decode_loop(decoder, *args, prefill_prompt_only=not settings.jit_compile)

        self._loop = tf.function(  # one trace, which every generating signature calls
            loop,
            input_signature=SEQ2SEQ_LOOP_SIGNATURE,
            autograph=False,
            jit_compile=settings.jit_compile,
        )
        self.share_text_functions()
        generate_spec = generate_input_signature()
        prompts = generate_spec[0]
        sources = tf.TensorSpec([None], tf.string, name="sources")
        scalar = lambda dtype, name: tf.TensorSpec([], dtype, name=name)  # noqa: E731
        self.serving_default = tf.function(
            self._serving_default, input_signature=[prompts], autograph=False
        )
        self.generate = tf.function(self._generate, input_signature=generate_spec, autograph=False)
        self.beam = tf.function(
            self._beam,
            input_signature=[
                prompts,
                scalar(tf.int32, "num_beams"),
                scalar(tf.int32, "max_new_tokens"),
                scalar(tf.float32, "length_penalty"),
            ],
            autograph=False,
        )
        self.score = tf.function(
            self._score,
            input_signature=[sources, tf.TensorSpec([None], tf.string, name="targets")],
            autograph=False,
        )
        self.count_tokens = tf.function(
            self._count_tokens, input_signature=[prompts], autograph=False
        )

    def signatures(self) -> dict[str, Any]:
        return {
            "serving_default": self.serving_default.get_concrete_function(),
            "generate": self.generate.get_concrete_function(),
            "beam": self.beam.get_concrete_function(),
            "score": self.score.get_concrete_function(),
            "count_tokens": self.count_tokens.get_concrete_function(),
        }

    # ----- pieces ---------------------------------------------------------------------------
    def _with_eos(self, texts, what: str, allow_empty: bool):
        """Checked texts `(B,)` to ragged ids `(B, None)`, each ended with eos."""
        checks = text_checks(texts, what, allow_empty=allow_empty and self.eos_id is not None)
        with tf.control_dependencies(checks):
            ids = tf.cast(self._encode(tf.identity(texts)), tf.int32)  # (B, None)
        if self.eos_id is None:
            return ids
        eos = tf.fill([tf.shape(texts)[0], 1], tf.constant(self.eos_id, tf.int32))
        return tf.concat([ids, tf.RaggedTensor.from_tensor(eos)], axis=1)

    def _sources(self, sources, what: str):
        """`(ids (B, S), mask (B, S))`: sources ended with eos, cut to the model's length."""
        ids = self._with_eos(sources, what, allow_empty=True)[:, : self.length]  # (B, S)
        dense = ids.to_tensor(default_value=self.pad_id)  # (B, S)
        mask = tf.sequence_mask(ids.row_lengths(), tf.shape(dense)[1], dtype=tf.int32)
        return dense, mask

    def _count_tokens(self, prompts):
        # prompts: (B,) -> lengths (B,): the source ids the encoder reads, eos included.
        _, mask = self._sources(prompts, "prompts")  # (B, S)
        return {"lengths": tf.reduce_sum(mask, axis=1)}

    def _serving_default(self, prompts):
        return self._generate(prompts, *export_sampling(self.settings, self.default_new_tokens))

    def _generate(self, prompts, max_new_tokens, temperature, top_k, top_p, seed):
        length_check, max_new_tokens = self._length(max_new_tokens)
        checks = [length_check, *sampling_checks(temperature, top_k, top_p)]
        with tf.control_dependencies(checks):
            encoder_ids, encoder_mask = self._sources(prompts, "prompts")
        b = tf.shape(encoder_ids)[0]
        buffer = tf.concat(
            [
                tf.fill([b, 1], tf.constant(self.start_id, tf.int32)),
                tf.fill(tf.stack([b, max_new_tokens]), tf.constant(self.pad_id, tf.int32)),
            ],
            axis=1,
        )  # (B, 1 + N)
        out, lengths = self._loop(
            encoder_ids,
            encoder_mask,
            buffer,
            tf.ones([b], tf.int32),
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            seed,
            tf.constant(self.stop_ids or [-1], tf.int32),
            tf.constant(self.pad_id, tf.int32),
        )
        new = tf.RaggedTensor.from_tensor(out[:, 1:], lengths=lengths - 1)  # (B, None)
        text = self._decode_text(new)  # (B,)
        outputs = cut_at_stops_graph(text, self.stop_strings)
        stops = tf.constant(self.stop_ids or [-1], tf.int32)
        last = tf.gather(out, lengths - 1, batch_dims=1)  # (B,) the start token when empty
        stopped = (
            (lengths - 1 < max_new_tokens)
            | ((lengths > 1) & tf.reduce_any(last[:, None] == stops[None, :], axis=-1))
            | (outputs != text)
        )
        tokens = new.to_tensor(default_value=-1, shape=tf.stack([b, max_new_tokens]))
        result = {
            "completions": outputs,
            "tokens": tokens,
            "lengths": lengths - 1,
            "finish_reasons": finish_reasons(stopped),
        }
        if self.safety is not None:  # flag, redact or block, as for a causal LM
            result["completions"], result["flagged"] = self.safety.apply_graph(outputs)
        return result

    def _length(self, max_new_tokens):
        """`(check, tokens to make)`: a request's `max_new_tokens` in [0, the export's limit]
        (0: its default), within the decoder's positions after the start token."""
        check, value = max_new_tokens_check(
            max_new_tokens, self.settings.max_new_tokens_limit, self.default_new_tokens
        )
        return check, tf.minimum(value, self.length - 1)

    def _beam(self, prompts, num_beams, max_new_tokens, length_penalty):
        limit = self.settings.max_num_beams
        length_check, max_new_tokens = self._length(max_new_tokens)
        checks = [
            length_check,
            tf_assert(
                (num_beams >= 1) & (num_beams <= limit),
                f"num_beams must be in [1, {limit}] (export.max_num_beams)",
            ),
            tf_assert(tf.math.is_finite(length_penalty), "length_penalty must be finite"),
        ]
        with tf.control_dependencies(checks):
            encoder_ids, encoder_mask = self._sources(prompts, "prompts")
        b = tf.shape(encoder_ids)[0]
        decoder = self._model.bind(
            tf.repeat(encoder_ids, num_beams, axis=0), tf.repeat(encoder_mask, num_beams, axis=0)
        )
        found = beam_search_graph(
            decoder,
            tf.fill([b, 1], tf.constant(self.start_id, tf.int32)),
            num_beams,
            max_new_tokens,
            length_penalty,
            tf.constant(self.stop_ids or [-1], tf.int32),
        )
        flat = tf.reshape(found.tokens, tf.stack([-1, max_new_tokens]))  # (B*K, N)
        new = tf.RaggedTensor.from_tensor(flat, lengths=tf.reshape(found.lengths, [-1]))
        texts = cut_at_stops_graph(self._decode_text(new), self.stop_strings)
        shape = tf.shape(found.lengths)  # (B, K)
        return {
            "completions": tf.reshape(texts, shape),
            "scores": found.scores,
            "log_probs": found.log_probs,
            "tokens": found.tokens,
            "lengths": found.lengths,
        }

    def _score(self, sources, targets):
        same = tf_assert(
            tf.shape(sources)[0] == tf.shape(targets)[0],
            "sources and targets must have one entry each per pair",
        )
        with tf.control_dependencies([same]):
            encoder_ids, encoder_mask = self._sources(sources, "sources")
        labels = self._with_eos(targets, "targets", allow_empty=True)  # (B, None)
        lengths = tf.cast(labels.row_lengths(), tf.int32)
        fits = [
            tf_assert(
                tf.reduce_max(lengths) <= self.length,
                f"targets: a target is longer than the decoder's {self.length} positions",
            ),
            tf_assert(tf.reduce_min(lengths) >= 1, "targets: a target encodes to no tokens"),
        ]
        with tf.control_dependencies(fits):
            dense = labels.to_tensor(default_value=self.pad_id)  # (B, T)
        b = tf.shape(dense)[0]
        start = tf.fill([b, 1], tf.constant(self.start_id, tf.int32))
        decoder_ids = tf.concat([start, dense[:, :-1]], axis=1)  # shifted right, as in training
        logits = self._model(encoder_ids, decoder_ids, encoder_padding_mask=encoder_mask)
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)  # (B, T, V)
        scored = tf.sequence_mask(lengths, tf.shape(dense)[1])
        token_log_probs = tf.where(scored, tf.gather(log_probs, dense, batch_dims=2), 0.0)
        return {
            "token_log_probs": token_log_probs,
            "token_ids": tf.where(scored, dense, -1),
            "lengths": lengths,
            "log_likelihood": tf.reduce_sum(token_log_probs, axis=-1),
        }

    # ----- what the exporter writes and checks ---------------------------------------------
    def sample_inputs(self, texts) -> dict[str, Any]:
        return {"prompts": list(texts)}

    def _targets(self, texts) -> list[str]:
        """A target per sample text for `score`: its first word, as much as the decoder holds."""
        room = self.length - (self.eos_id is not None)
        out = []
        for text in texts:
            word = text.split()[0] if text.split() else text
            while len(self.tokenizer.encode_one(word)) > room:
                word = word[:-1]
            out.append(word)
        return out

    def _steps(self) -> int:
        return min(16, self.settings.max_new_tokens_limit, self.length - 1)

    def validation_requests(self, texts) -> dict[str, dict[str, Any]]:
        return {
            "generate": {
                "prompts": (list(texts), "string"),
                "max_new_tokens": (self._steps(), "int32"),
                "temperature": (0.0, "float32"),
                "top_k": (0, "int32"),
                "top_p": (1.0, "float32"),
                "seed": (0, "int32"),
            },
            "beam": {
                "prompts": (list(texts), "string"),
                "num_beams": (min(BEAMS, self.settings.max_num_beams), "int32"),
                "max_new_tokens": (self._steps(), "int32"),
                "length_penalty": (1.0, "float32"),
            },
            "score": {
                "sources": (list(texts), "string"),
                "targets": (self._targets(texts), "string"),
            },
            "count_tokens": {"prompts": (list(texts), "string")},
        }

    def check_validation(self, texts, results) -> str:
        from tfllm.generation.seq2seq import Seq2SeqGenerator

        n = self._steps()
        generated = Seq2SeqGenerator(self._model, self.tokenizer).generate(
            list(texts), GenerationConfig(max_new_tokens=n, stop=self.stop_strings)
        )
        expected = [g[0] for g in generated]
        if results["generate"]["completions"] != expected:
            raise ValueError(
                "greedy outputs differ after reloading: export "
                f"{results['generate']['completions']!r}, Keras {expected!r}"
            )
        want = self._model.score_texts(self.tokenizer, list(texts), self._targets(texts))
        diff = float(np.max(np.abs(np.asarray(results["score"]["log_likelihood"]) - want)))
        if diff > 1e-3:
            raise ValueError(f"target log-likelihoods differ after reloading by {diff:.3g}")
        beams = min(BEAMS, self.settings.max_num_beams)
        best = Seq2SeqGenerator(self._model, self.tokenizer).beam(
            list(texts),
            num_beams=beams,
            max_new_tokens=n,
            num_return_sequences=beams,
            stop=self.stop_strings,
        )
        served = results["beam"]["completions"]
        if [row[: len(want)] for row, want in zip(served, best, strict=True)] != best:
            raise ValueError(f"beams differ after reloading: export {served!r}, Keras {best!r}")
        _, mask = Seq2SeqGenerator(self._model, self.tokenizer).encode_sources(list(texts))
        lengths = [int(n) for n in np.sum(mask, axis=1)]
        if results["count_tokens"]["lengths"] != lengths:
            raise ValueError(
                f"count_tokens gave {results['count_tokens']['lengths']}, the Python encoder's "
                f"sources {lengths}"
            )
        return (
            f"greedy outputs of {len(texts)} sources, {n} tokens: identical; beams of "
            f"{len(texts)} sources ({beams} beams): identical; target log-likelihoods within "
            f"{diff:.2g}; token counts equal"
        )
