"""The graph a SavedModel serves: tokenization, the decode loop and detokenization, all as ops.

Every input is checked inside the graph with `tf.debugging` assertions, so a bad request fails
with `InvalidArgumentError` — which TensorFlow Serving (and `tfllm serve`) return to the client
as INVALID_ARGUMENT — instead of an opaque error deep in a gather.
"""

from __future__ import annotations

import json
from typing import Any

import tensorflow as tf
from tensorflow.python.trackable.data_structures import NoDependency

from tfllm.components.rows import row_slices
from tfllm.export.describe import describe_function
from tfllm.export.serving_base import ServingModule
from tfllm.export.settings import ExportSettings
from tfllm.export.text_graph import cut_at_stops_graph, text_checks, wrap_ids
from tfllm.export.text_graph import tf_assert as _assert
from tfllm.generation.decoder import LOOP_SIGNATURE, GenerationConfig, decode_loop
from tfllm.generation.prompts import FINISH_LENGTH, FINISH_STOP, prompt_ids, stop_tokens


def default_new_tokens(settings: ExportSettings, room: int) -> int:
    """`serving_default`'s `max_new_tokens`: the setting, or (None) half of `room` (the
    context a prompt and its completion share), at most 64, within the export's limit."""
    if settings.max_new_tokens is not None:
        return settings.max_new_tokens
    return max(1, min(64, room // 2, settings.max_new_tokens_limit))


def max_new_tokens_check(max_new_tokens, limit: int, default: int):
    """A request's `max_new_tokens`: in [0, limit], 0 meaning the export's default. Returns
    `(check, the value to use)`."""
    check = _assert(
        (max_new_tokens >= 0) & (max_new_tokens <= limit),
        f"max_new_tokens must be in [0, {limit}] (0 means the default of this export, {default})",
    )
    return check, tf.where(max_new_tokens > 0, max_new_tokens, tf.constant(default, tf.int32))


def finish_reasons(stopped) -> tf.Tensor:
    """Rule 4 of `tfllm.generation.prompts` as strings: `stop` where `stopped`, else `length`."""
    return tf.where(stopped, tf.constant(FINISH_STOP), tf.constant(FINISH_LENGTH))


def generate_input_signature() -> list[tf.TensorSpec]:
    """`generate`'s inputs: `prompts` and every sampling setting, per request."""
    scalar = lambda dtype, name: tf.TensorSpec([], dtype, name=name)  # noqa: E731
    return [
        tf.TensorSpec([None], tf.string, name="prompts"),
        scalar(tf.int32, "max_new_tokens"),
        scalar(tf.float32, "temperature"),
        scalar(tf.int32, "top_k"),
        scalar(tf.float32, "top_p"),
        scalar(tf.int32, "seed"),
    ]


def export_sampling(settings: ExportSettings, max_new_tokens: int) -> tuple[tf.Tensor, ...]:
    """`serving_default`'s fixed `(max_new_tokens, temperature, top_k, top_p, seed)`."""
    return (
        tf.constant(max_new_tokens, tf.int32),
        tf.constant(settings.temperature, tf.float32),
        tf.constant(settings.top_k, tf.int32),
        tf.constant(settings.top_p, tf.float32),
        tf.constant(settings.seed, tf.int32),
    )


def greedy_inputs(max_new_tokens: int) -> dict[str, tuple[Any, str]]:
    """The sampling inputs of a greedy validation request, `{input: (value, dtype)}`."""
    return {
        "max_new_tokens": (max_new_tokens, "int32"),
        "temperature": (0.0, "float32"),
        "top_k": (0, "int32"),
        "top_p": (1.0, "float32"),
        "seed": (0, "int32"),
    }


def sampling_checks(temperature, top_k, top_p) -> list:
    """A request's sampling settings, as `GenerationConfig.validate` checks them."""
    return [
        _assert(
            (temperature >= 0.0) & tf.math.is_finite(temperature),
            "temperature must be finite and >= 0",
        ),
        _assert(top_k >= 0, "top_k must be >= 0"),
        _assert((top_p > 0.0) & (top_p <= 1.0), "top_p must be in (0, 1]"),
    ]


class CausalLMServing(ServingModule):
    """Signatures of a causal LM.

    Prompts follow the rules of `tfllm.generation.prompts`, as Python generation does: bos
    first (when the tokenizer adds it), an empty prompt starts from eos, a prompt longer than
    `context - 1` tokens keeps its last ones, a row writes at most `max_new_tokens` and never
    past the context, and a completion ends before the first of the export's stop strings.

    - `serving_default(prompts)`: completions with the export's settings.
    - `generate(prompts, max_new_tokens, temperature, top_k, top_p, seed)`: all settings per
      request (TF Serving's Predict needs every input of a signature, so the optional settings
      live in their own signature); `max_new_tokens=0` takes the export's default.
    - `score(texts)`: per-token log-probabilities and the sequence log-likelihood.
    - `score_tokens(token_ids, lengths)`: the same for token ids (`[B, T]` right-padded, and
      each row's length); ids outside the vocabulary are refused.
    - `count_tokens(prompts)`: `lengths`, the ids `generate` reads for each prompt before the
      context crop (what `tfllm chat server=` fits a conversation with, without a tokenizer).
    - `describe(keys)`: the export's `chat_template` (null without one), the tokenizer's
      `special_tokens`, its `context`, its default `max_new_tokens` and
      `max_new_tokens_limit`, and its `stop` strings, as JSON texts
      (`tfllm.export.describe`): what `tfllm chat server=` reads instead of the export's files.

    Three more take `generate` apart so that a server can stream a completion as it is made
    (the OpenAI endpoints of `tfllm serve` do): `generate` equals `prompt_ids`, then
    `generate_ids` in pieces (each piece continues from the ids so far; sampling is seeded by
    position, so the pieces draw what one call draws), then `completion_text`. An export with
    a safety filter has none of them, since its filter judges whole completions.

    - `prompt_ids(prompts, max_new_tokens)`: `token_ids` (int32 `[B, T]`, padded with -1) and
      `lengths`, the ids `generate` starts from (bos, empty-prompt and context-crop rules
      applied), and `budgets`, the new tokens each row may write.
    - `generate_ids(token_ids, lengths, max_new_tokens, temperature, top_k, top_p, seed)`:
      continues each row of ids (never cropped: a row of `context` ids writes nothing) with at
      most `max_new_tokens` new ones: `tokens` (`[B, N]`, -1 padded), `lengths` (new tokens
      per row) and `finish_reasons` (`stop` where a stop token ended the row).
    - `completion_text(token_ids, lengths)`: the text of new ids, `completions` cut before the
      export's first stop string, `stopped` where a stop string cut one, and `held`, the
      characters at the end that may begin one (a streaming client waits for more before it
      shows them).

    Outputs of both generation signatures: `completions` (string `[B]`), `tokens` (int32
    `[B, N]`, the new tokens, padded with -1), `lengths` (int32 `[B]`, new tokens per row),
    `finish_reasons` (string `[B]`: `stop` or `length`, as `Completion.finish_reason`) and,
    with a safety filter, `flagged` (bool `[B]`, completions the filter flags; its action
    `redact` or `block` also rewrites them, as in Python).
    """

    def __init__(
        self, model, tokenizer, settings: ExportSettings, chat_template: str | None = None
    ):
        super().__init__(model, tokenizer, "tfllm_causal_lm")
        self.settings = settings
        self.safety = settings.safety_filter()
        self.context = int(model.max_sequence_length)
        self.default_new_tokens = default_new_tokens(settings, self.context)
        self.vocabulary_size = int(model.vocabulary_size)
        self.bos_id = tokenizer.prompt_bos_id
        self.eos_id = tokenizer.eos_id
        self.stop_ids, _ = stop_tokens(tokenizer, settings.stop, stop_at_eos=True)
        self.stop_strings = tuple(settings.stop)
        self._stream_reference = None  # (key, answer) of `_stream_expected`
        self._reference = None  # the Python generator validation compares with, made once
        loop = lambda *args: decode_loop(  # noqa: E731
            model, *args, prefill_prompt_only=not settings.jit_compile
        )
        # One trace of the loop, which every generating signature calls (one copy in the
        # SavedModel).
        self._loop = tf.function(
            loop,
            input_signature=LOOP_SIGNATURE,
            autograph=False,
            jit_compile=settings.jit_compile,
        )
        self.share_text_functions()
        ids_spec = [
            tf.TensorSpec([None, None], tf.int32, name="token_ids"),
            tf.TensorSpec([None], tf.int32, name="lengths"),
        ]
        self._scored = tf.function(self._scored_rows, input_signature=ids_spec, autograph=False)
        generate_spec = generate_input_signature()
        self.serving_default = tf.function(
            self._serving_default, input_signature=generate_spec[:1], autograph=False
        )
        self.generate = tf.function(self._generate, input_signature=generate_spec, autograph=False)
        self.score = tf.function(
            self._score,
            input_signature=[tf.TensorSpec([None], tf.string, name="texts")],
            autograph=False,
        )
        self.score_tokens = tf.function(
            self._score_tokens, input_signature=ids_spec, autograph=False
        )
        self.count_tokens = tf.function(
            self._count_tokens,
            input_signature=generate_spec[:1],
            autograph=False,
        )
        self.prompt_ids = tf.function(
            self._prompt_ids_signature, input_signature=generate_spec[:2], autograph=False
        )
        self.generate_ids = tf.function(
            self._generate_ids, input_signature=ids_spec + generate_spec[1:], autograph=False
        )
        self.completion_text = tf.function(
            self._completion_text, input_signature=ids_spec, autograph=False
        )
        self.description = NoDependency(
            {
                "chat_template": chat_template,
                "special_tokens": dict(tokenizer.special_tokens),
                "context": self.context,
                "max_new_tokens": self.default_new_tokens,
                "max_new_tokens_limit": int(settings.max_new_tokens_limit),
                "stop": list(settings.stop),
            }
        )
        self.describe = describe_function(self.description)

    @property
    def streams(self) -> bool:
        """Whether the export has the signatures that stream a completion in pieces."""
        return self.safety is None

    def signatures(self) -> dict[str, Any]:
        signatures = {
            "serving_default": self.serving_default.get_concrete_function(),
            "generate": self.generate.get_concrete_function(),
            "score": self.score.get_concrete_function(),
            "score_tokens": self.score_tokens.get_concrete_function(),
            "count_tokens": self.count_tokens.get_concrete_function(),
            "describe": self.describe.get_concrete_function(),
        }
        if self.streams:
            signatures["prompt_ids"] = self.prompt_ids.get_concrete_function()
            signatures["generate_ids"] = self.generate_ids.get_concrete_function()
            signatures["completion_text"] = self.completion_text.get_concrete_function()
        return signatures

    def sample_inputs(self, texts) -> dict[str, Any]:
        return {"prompts": list(texts)}

    def prompt_context(self) -> int | None:
        return self.context

    def warmup_requests(self, texts) -> list[tuple[str, dict[str, tuple[Any, str]]]]:
        """`serving_default` at batches of 1 and 2, then every other signature once, generating
        one token. A server that replays them has each signature's graph initialized before
        its first request: without them the first `generate` of SmolLM2-135M took 11 s, the
        first `score` 6 s, and an OpenAI chat completion, which calls `count_tokens` then
        `generate`, 16 s."""
        from tfllm.generation.prompts import encode_prompt, prompt_ids

        prompt = list(texts[:1])
        row = encode_prompt(self.tokenizer, prompt[0], self.context)
        ids = {"token_ids": ([row], "int32"), "lengths": ([len(row)], "int32")}
        requests = self.default_warmup(texts) + [
            ("generate", {"prompts": (prompt, "string"), **greedy_inputs(1)}),
            ("count_tokens", {"prompts": (list(texts), "string")}),
            ("describe", {"keys": ([], "string")}),
        ]
        # Scoring needs a text of 2 to `context` ids (with bos), uncropped.
        scorable = [t for t in texts if 2 <= len(prompt_ids(self.tokenizer, t)) <= self.context]
        if scorable:
            whole = prompt_ids(self.tokenizer, scorable[0])
            whole_ids = {"token_ids": ([whole], "int32"), "lengths": ([len(whole)], "int32")}
            requests += [
                ("score", {"texts": (scorable[:1], "string")}),
                ("score_tokens", whole_ids),
            ]
        if self.streams:
            requests += [
                ("prompt_ids", {"prompts": (prompt, "string"), "max_new_tokens": (1, "int32")}),
                ("generate_ids", {**ids, **greedy_inputs(1)}),
                ("completion_text", ids),
            ]
        return requests

    def _validation_setup(self, texts) -> tuple[list[str], int]:
        """The sample prompts that fit the context with room to generate, and how many tokens
        to generate from them (at most 16)."""
        bos = 1 if self.bos_id is not None else 0
        lengths = {p: len(self.tokenizer.encode_one(p)) + bos for p in texts}
        prompts = [p for p in texts if lengths[p] + 4 <= self.context]
        if not prompts:
            raise ValueError(
                f"the model's context of {self.context} tokens is too short to validate"
            )
        longest = max(lengths[p] for p in prompts)
        return prompts, min(16, self.settings.max_new_tokens_limit, self.context - longest)

    def _python_generator(self):
        """The Python generation path validation compares the export with: one `Generator`
        traced for any shape, so its decode loop is traced once for every comparison (each
        takes its settings as tensors)."""
        from tfllm.generation.decoder import Generator

        if self._reference is None:
            generator = Generator(self._model, self.tokenizer, any_shape=True)
            self._reference = NoDependency(generator)  # not saved
        return self._reference

    def _default_completions(self, texts) -> list[str]:
        """What `serving_default` must answer for `texts`: the Keras model's completions with
        the export's settings."""
        config = GenerationConfig(
            max_new_tokens=self.default_new_tokens,
            temperature=self.settings.temperature,
            top_k=self.settings.top_k,
            top_p=self.settings.top_p,
            seed=self.settings.seed,
            stop=tuple(self.settings.stop),
        )
        return [c[0] for c in self._python_generator().generate(list(texts), config)]

    def validation_requests(self, texts) -> dict[str, dict[str, Any]]:
        prompts, n = self._validation_setup(texts)
        return {
            "serving_default": {"prompts": (list(texts), "string")},
            "count_tokens": {"prompts": (list(texts), "string")},
            "describe": {"keys": ([], "string")},
            "generate": {"prompts": (prompts, "string"), **greedy_inputs(n)},
            **(self._stream_requests(prompts, n) if self.streams else {}),
        }

    def _stream_expected(self, prompts, n):
        """What the streaming signatures must answer for `prompts`, `n` greedy tokens: the
        Python prompt ids, and the completions' token ids and texts. Made once: the requests
        and the check of one validation read the same answer."""
        from tfllm.generation.prompts import encode_prompt

        key = (tuple(prompts), n)
        if self._stream_reference is None or self._stream_reference[0] != key:
            rows = [encode_prompt(self.tokenizer, p, self.context) for p in prompts]
            completions = [
                c[0]
                for c in self._python_generator().complete(
                    prompts, GenerationConfig(max_new_tokens=n, stop=self.stop_strings)
                )
            ]
            self._stream_reference = NoDependency((key, (rows, completions)))  # not saved
        return self._stream_reference[1]

    def _stream_requests(self, prompts, n) -> dict[str, dict[str, Any]]:
        rows, completions = self._stream_expected(prompts, n)

        def padded(seqs):
            width = max(1, max(len(r) for r in seqs))
            return [list(r) + [-1] * (width - len(r)) for r in seqs], [len(r) for r in seqs]

        ids, lengths = padded(rows)
        new, new_lengths = padded([c.token_ids for c in completions])
        return {
            "prompt_ids": {"prompts": (prompts, "string"), "max_new_tokens": (n, "int32")},
            "generate_ids": {
                "token_ids": (ids, "int32"),
                "lengths": (lengths, "int32"),
                **greedy_inputs(n),
            },
            "completion_text": {"token_ids": (new, "int32"), "lengths": (new_lengths, "int32")},
        }

    def _check_streaming(self, prompts, n, results) -> None:
        rows, completions = self._stream_expected(prompts, n)

        def cut(tokens, lengths):
            return [list(t[:k]) for t, k in zip(tokens, lengths, strict=True)]

        got = results["prompt_ids"]
        if cut(got["token_ids"], got["lengths"]) != rows:
            raise ValueError(f"prompt_ids differs after reloading: export {got}, Python {rows}")
        got = results["generate_ids"]
        expected = [list(c.token_ids) for c in completions]
        if cut(got["tokens"], got["lengths"]) != expected:
            raise ValueError(
                f"generate_ids differs after reloading: export {got}, Python {expected}"
            )
        texts = results["completion_text"]["completions"]
        if texts != [c.text for c in completions]:
            raise ValueError(
                f"completion_text differs after reloading: export {texts!r}, Python "
                f"{[c.text for c in completions]!r}"
            )

    def check_validation(self, texts, results) -> str:
        prompts, n = self._validation_setup(texts)
        generated = self._python_generator().generate(prompts, GenerationConfig(max_new_tokens=n))
        expected = [c[0] for c in generated]
        got = results["generate"]["completions"]
        if got != expected:
            raise ValueError(
                f"greedy completions differ after reloading: export {got!r}, Keras {expected!r}"
            )
        counts = [len(prompt_ids(self.tokenizer, t)) for t in texts]
        if list(results["count_tokens"]["lengths"]) != counts:
            raise ValueError(
                f"count_tokens differs after reloading: export {results['count_tokens']}, "
                f"Python {counts}"
            )
        got = results["describe"]
        description = {k: json.loads(v) for k, v in zip(got["keys"], got["values"], strict=True)}
        if description != self.description:
            raise ValueError(
                f"describe differs after reloading: export {description}, Python {self.description}"
            )
        default = self._default_completions(texts)
        got = results["serving_default"]["completions"]
        if got != default:
            raise ValueError(
                f"serving_default's completions differ after reloading: export {got!r}, "
                f"Keras {default!r}"
            )
        if self.streams:
            self._check_streaming(prompts, n, results)
        return (
            f"greedy completions of {len(expected)} prompts, {n} tokens, serving_default "
            f"({self.default_new_tokens} tokens) of {len(default)}"
            + (", the streaming signatures" if self.streams else "")
            + " and describe: identical"
        )

    # ----- pieces ---------------------------------------------------------------------------
    def _token_ids(self, texts, what: str, allow_empty: bool = False):
        """Validated texts `(B,)` to ragged ids `(B, None)` (with bos when the model uses it).
        With `allow_empty`, a string without ids starts from eos (a prompt, by the rules of
        `tfllm.generation.prompts.prompt_ids`); otherwise empty strings are refused."""
        checks = text_checks(texts, what, allow_empty)
        if allow_empty and self.bos_id is None and self.eos_id is None:
            checks.append(
                _assert(
                    tf.reduce_all(tf.strings.length(texts) > 0),
                    f"{what}: a string is empty and the tokenizer has no bos or eos token to "
                    "start from",
                )
            )
        with tf.control_dependencies(checks):
            ids = tf.cast(self._encode(tf.identity(texts)), tf.int32)  # (B, None)
        b = tf.shape(texts)[0]
        if self.bos_id is not None:
            bos = tf.fill([b, 1], tf.constant(self.bos_id, tf.int32))
            ids = tf.concat([tf.RaggedTensor.from_tensor(bos), ids], axis=1)
        elif allow_empty and self.eos_id is not None:
            empty = tf.cast(ids.row_lengths() == 0, tf.int32)  # (B,) 1 where a row has no ids
            eos = tf.fill([tf.reduce_sum(empty)], tf.constant(self.eos_id, tf.int32))
            fill = tf.RaggedTensor.from_row_lengths(eos, tf.cast(empty, ids.row_splits.dtype))
            ids = tf.concat([ids, fill], axis=1)
        return ids

    def _cropped_ids(self, prompts):
        """`tfllm.generation.prompts.encode_prompt` in the graph: ragged ids `(B, None)`, each
        row cut to its last `context - 1` tokens."""
        ids = self._token_ids(prompts, "prompts", allow_empty=True)
        room = self.context - 1
        lengths = tf.cast(ids.row_lengths(), tf.int32)  # (B,)
        return row_slices(ids, tf.maximum(lengths - room, 0), tf.minimum(lengths, room))

    def _count_tokens(self, prompts):
        # prompts: (B,) -> lengths (B,): the ids `generate` reads for each prompt, before the
        # context crop (bos, and eos for an empty prompt, included), for clients that fit a
        # conversation to the context (`tfllm chat server=`) or report usage.
        ids = self._token_ids(prompts, "prompts", allow_empty=True)  # (B, None)
        return {"lengths": tf.cast(ids.row_lengths(), tf.int32)}

    def _serving_default(self, prompts):
        return self._generate(prompts, *export_sampling(self.settings, self.default_new_tokens))

    def _requested_length(self, max_new_tokens):
        """A request's `max_new_tokens` checked against the export's limit, 0 meaning its
        default: `(check, the value to use)`."""
        return max_new_tokens_check(
            max_new_tokens, self.settings.max_new_tokens_limit, self.default_new_tokens
        )

    @staticmethod
    def _new_token_outputs(new, max_new_tokens) -> dict[str, tf.Tensor]:
        """New ids `(B, None)` as the generation signatures output them: `tokens` `(B, N)`
        padded with -1, and `lengths` `(B,)`."""
        b = new.nrows(out_type=tf.int32)
        return {
            "tokens": new.to_tensor(default_value=-1, shape=tf.stack([b, max_new_tokens])),
            "lengths": tf.cast(new.row_lengths(), tf.int32),
        }

    def _generate(self, prompts, max_new_tokens, temperature, top_k, top_p, seed):
        length_check, max_new_tokens = self._requested_length(max_new_tokens)
        checks = [length_check, *sampling_checks(temperature, top_k, top_p)]
        with tf.control_dependencies(checks):
            ids = self._cropped_ids(prompts)
        new, ended = self._decode(ids, max_new_tokens, temperature, top_k, top_p, seed)
        completions, cut = self._text(new)
        outputs = {
            "completions": completions,
            **self._new_token_outputs(new, max_new_tokens),
            "finish_reasons": finish_reasons(ended | cut),
        }
        if self.safety is not None:  # flag, redact or block, as `tfllm generate safety=` does
            outputs["completions"], outputs["flagged"] = self.safety.apply_graph(completions)
        return outputs

    def _decode(self, ids, max_new_tokens, temperature, top_k, top_p, seed):
        """The decode loop from ragged ids `(B, None)` (each row within the context). Returns
        the new ids `(B, None)` and where a row ended before its budget or on a stop token
        `(B,)`."""
        prompt_lengths = tf.cast(ids.row_lengths(), tf.int32)  # (B,)
        # Rule 4: each row writes what fits, at most max_new_tokens.
        total = tf.minimum(tf.reduce_max(prompt_lengths) + max_new_tokens, self.context)
        b = tf.shape(prompt_lengths)[0]
        buffer = ids.to_tensor(default_value=self.pad_id, shape=tf.stack([b, total]))  # (B, L)
        stops = tf.constant(self.stop_ids or [-1], tf.int32)
        out, lengths = self._loop(
            buffer,
            prompt_lengths,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            seed,
            stops,
            tf.constant(self.pad_id, tf.int32),
        )
        new_lengths = lengths - prompt_lengths  # (B,)
        new = row_slices(out, prompt_lengths, new_lengths)  # (B, None)
        budgets = tf.minimum(max_new_tokens, self.context - prompt_lengths)  # (B,)
        last = tf.gather(out, tf.maximum(lengths - 1, 0), batch_dims=1)  # (B,)
        ended = (new_lengths < budgets) | (
            (new_lengths > 0) & tf.reduce_any(last[:, None] == stops[None, :], axis=-1)
        )
        return new, ended

    def _text(self, new):
        """New ids `(B, None)` to the completion text cut before the export's first stop
        string `(B,)`, and where one cut it `(B,)`."""
        text = self._decode_text(new)  # (B,)
        completions = cut_at_stops_graph(text, self.stop_strings)
        return completions, completions != text

    def _prompt_ids_signature(self, prompts, max_new_tokens):
        # prompts: (B,) -> token_ids (B, T) -1 padded, lengths (B,), budgets (B,)
        length_check, max_new_tokens = self._requested_length(max_new_tokens)
        with tf.control_dependencies([length_check]):
            ids = self._cropped_ids(prompts)
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        return {
            "token_ids": ids.to_tensor(default_value=-1),
            "lengths": lengths,
            "budgets": tf.minimum(max_new_tokens, self.context - lengths),
        }

    def _id_rows(self, token_ids, lengths, low: int):
        """Checked `token_ids` `(B, T)` cut to `lengths` `(B,)`: ragged `(B, None)`."""
        checks = [
            _assert(tf.shape(token_ids)[0] > 0, "token_ids: the batch is empty"),
            _assert(
                tf.shape(lengths)[0] == tf.shape(token_ids)[0],
                "lengths must have one entry per row of token_ids",
            ),
            _assert(
                tf.reduce_all((lengths >= low) & (lengths <= tf.shape(token_ids)[1])),
                f"lengths must lie in [{low}, token_ids.shape[1]]",
            ),
            _assert(
                tf.reduce_all(
                    tf.ragged.boolean_mask(
                        (token_ids >= 0) & (token_ids < self.vocabulary_size),
                        tf.sequence_mask(lengths, tf.shape(token_ids)[1]),
                    ).flat_values
                ),
                f"token ids must lie in [0, {self.vocabulary_size})",
            ),
        ]
        with tf.control_dependencies(checks):
            return tf.RaggedTensor.from_tensor(tf.identity(token_ids), lengths=lengths)

    def _generate_ids(self, token_ids, lengths, max_new_tokens, temperature, top_k, top_p, seed):
        # token_ids: (B, T) right-padded, lengths: (B,) -> tokens (B, N), lengths, reasons (B,)
        length_check, max_new_tokens = self._requested_length(max_new_tokens)
        fits = _assert(
            tf.reduce_max(lengths) <= self.context,
            f"a row of token_ids is longer than the model's context of {self.context} tokens",
        )
        with tf.control_dependencies(
            [length_check, fits, *sampling_checks(temperature, top_k, top_p)]
        ):
            ids = self._id_rows(token_ids, lengths, low=1)
        new, ended = self._decode(ids, max_new_tokens, temperature, top_k, top_p, seed)
        return {
            **self._new_token_outputs(new, max_new_tokens),
            "finish_reasons": finish_reasons(ended),
        }

    def _completion_text(self, token_ids, lengths):
        # token_ids: (B, T) right-padded new ids, lengths: (B,) -> completions, stopped, held (B,)
        completions, cut = self._text(self._id_rows(token_ids, lengths, low=0))
        return {"completions": completions, "stopped": cut, "held": self._held(completions)}

    def _held(self, texts):
        """How many characters at the end of each text `(B,)` may begin one of the export's
        stop strings (a streaming client holds them back until the next piece shows)."""
        held = tf.zeros(tf.shape(texts), tf.int32)
        for stop in self.stop_strings:
            for k in range(1, len(stop)):
                # RE2: any text, then the stop's first k characters at the very end.
                pattern = "(?s).*" + "".join(f"\\x{{{ord(c):x}}}" for c in stop[:k])
                ends = tf.strings.regex_full_match(texts, pattern)
                held = tf.where(ends, tf.maximum(held, k), held)
        return held

    def _score(self, texts):
        ids = self._token_ids(texts, "texts")  # (B, None)
        return self._score_ids(ids, "a text")

    def _score_tokens(self, token_ids, lengths):
        # token_ids: (B, T) right-padded; lengths: (B,) real tokens per row.
        return self._score_ids(self._id_rows(token_ids, lengths, low=0), "a sequence")

    def _score_ids(self, ids, what: str):
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        fits = [
            _assert(
                tf.reduce_max(lengths) <= self.context,
                f"{what} is longer than the model's context of {self.context} tokens",
            ),
            _assert(
                tf.reduce_min(lengths) >= 2,
                f"{what} has fewer than two tokens: nothing to score (the first token has "
                "no context)",
            ),
        ]
        with tf.control_dependencies(fits):
            dense = ids.to_tensor(default_value=self.pad_id)  # (B, T)
        return self._scored(dense, lengths)

    def _scored_rows(self, dense, lengths):
        # dense: (B, T) padded ids; lengths: (B,) -> score's outputs (one trace, which `score`
        # and `score_tokens` both call: the model's forward pass is stored once)
        mask = tf.sequence_mask(lengths, tf.shape(dense)[1])  # (B, T)
        logits = self._model(dense, padding_mask=mask)  # (B, T, V)
        log_probs = tf.nn.log_softmax(tf.cast(logits[:, :-1], tf.float32), axis=-1)
        targets = dense[:, 1:]  # (B, T-1)
        token_log_probs = tf.gather(log_probs, targets, batch_dims=2)  # (B, T-1)
        scored = mask[:, 1:]
        token_log_probs = tf.where(scored, token_log_probs, 0.0)
        return {
            "token_log_probs": token_log_probs,
            "token_ids": tf.where(scored, targets, -1),
            "lengths": lengths - 1,
            "log_likelihood": tf.reduce_sum(token_log_probs, axis=-1),
        }


class EmbeddingServing(ServingModule):
    """Signatures of a sentence-embedding model: `serving_default` and `embed`, texts to
    L2-normalized embeddings `[B, D]`; `count_tokens(texts) -> lengths`, the ids `embed` reads
    for each text (boundary tokens included, after the `max_length` crop), for usage counts."""

    def __init__(self, model, tokenizer, max_length: int | None = None):
        super().__init__(model, tokenizer, "tfllm_embedding")
        self.max_length = int(
            min(max_length or model.max_sequence_length, model.max_sequence_length)
        )
        self.cls_id, self.sep_id = tokenizer.boundary_ids()
        self.share_text_functions(detokenize=False)
        spec = [tf.TensorSpec([None], tf.string, name="texts")]
        self.embed = tf.function(self._embed, input_signature=spec, autograph=False)
        self.count_tokens = tf.function(self._count_tokens, input_signature=spec, autograph=False)

    def signatures(self) -> dict[str, Any]:
        fn = self.embed.get_concrete_function()
        return {
            "serving_default": fn,
            "embed": fn,
            "count_tokens": self.count_tokens.get_concrete_function(),
        }

    def sample_inputs(self, texts) -> dict[str, Any]:
        return {"texts": list(texts)}

    def validation_requests(self, texts) -> dict[str, dict[str, Any]]:
        return {
            "embed": {"texts": (list(texts), "string")},
            "count_tokens": {"texts": (list(texts), "string")},
        }

    def check_validation(self, texts, results) -> str:
        import numpy as np

        expected = self._model.embed_texts(self.tokenizer, list(texts), max_length=self.max_length)
        got = np.asarray(results["embed"]["embeddings"], np.float32)
        diff = float(np.max(np.abs(got - expected)))
        if diff > 1e-5:
            raise ValueError(f"embeddings differ after reloading by {diff:.3g}")
        boundaries = (self.cls_id is not None) + (self.sep_id is not None)
        lengths = [
            min(len(self.tokenizer.encode_one(t)), self.max_length - boundaries) + boundaries
            for t in texts
        ]
        counted = [int(n) for n in results["count_tokens"]["lengths"]]
        if counted != lengths:
            raise ValueError(f"count_tokens gave {counted}, the Python tokenizer {lengths}")
        return f"embeddings of {len(expected)} texts: max difference {diff:.2g}; token counts equal"

    def _wrapped_ids(self, texts):
        # texts: (B,) -> (B, None) the ids the encoder reads: cropped, with [CLS] ... [SEP].
        with tf.control_dependencies(text_checks(texts, "texts", allow_empty=True)):
            ids = tf.cast(self._encode(tf.identity(texts)), tf.int32)  # (B, None)
        inner = self.max_length - (self.cls_id is not None) - (self.sep_id is not None)
        return wrap_ids(ids[:, :inner], self.cls_id, self.sep_id)  # (B, None)

    def _count_tokens(self, texts):
        return {"lengths": tf.cast(self._wrapped_ids(texts).row_lengths(), tf.int32)}  # (B,)

    def _embed(self, texts):
        ids = self._wrapped_ids(texts)  # (B, None)
        dense = ids.to_tensor(default_value=self.pad_id)  # (B, T)
        mask = tf.sequence_mask(ids.row_lengths(), tf.shape(dense)[1])
        return {"embeddings": self._model(dense, padding_mask=mask)}
