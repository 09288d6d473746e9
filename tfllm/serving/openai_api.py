"""OpenAI-compatible endpoints over the served SavedModels: what chat UIs, agent frameworks and
the `openai` SDKs speak (`base_url="http://host:port/v1"`).

- `GET /v1/models`, `GET /v1/models/{model}`: the served models with an available version.
- `POST /v1/chat/completions`: messages rendered with the export's chat template
  (`chat.template` of the run it came from, the template `tfllm chat` uses), then the
  export's `generate` signature.
- `POST /v1/completions`: prompts straight to `generate`.
- `POST /v1/embeddings`: an embedding export's `embed` signature.

Every request runs the same signatures TF Serving's APIs run, on the same loaded version, through
the same `Predictor` (limits, concurrency, batching). `model` is a served model's name, or
`name:N` for version N. Errors are OpenAI's error JSON (`{"error": {"message", "type", "param",
"code"}}`) with its HTTP status; a parameter this server cannot honour is refused by name, never
ignored. The bearer token and TLS are the server's (`Security`).

Rules, as the export applies them (and `tfllm generate` in Python): temperature 0 is greedy; a
completion ends before the first stop string (the export's and the request's `stop`);
`finish_reason` is `length` when the token budget or the context ended it. A prompt that leaves
no room for a new token is refused (`context_length_exceeded`), where `generate` itself would
keep its last tokens. Usage counts the ids the model read (bos included) and the tokens it
generated for every choice (a request-level stop string cuts the text after decoding, so
those tokens are counted).

`stream: true` answers with server-sent events in OpenAI's chunk format (`data: {...}` lines, then
`data: [DONE]`), chunks that reassemble to the non-streamed text. An export with the streaming
signatures (`prompt_ids`, `generate_ids`, `completion_text`: every causal LM export without a
safety filter) is decoded in growing pieces and its text sent as it is made (see
`tfllm.serving.openai_stream`); then a request-level stop string ends decoding where it appears,
so `usage` counts the tokens decoded up to there. Other exports (a safety filter judges whole
completions) decode in one call and their chunks go out when it ends. An error after the first
event arrives as an event holding OpenAI's error JSON.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any

import grpc
import numpy as np

from tfllm.chat_template import render_template
from tfllm.serving.openai_stream import STREAM_SIGNATURES, IncrementalCompletions, cut_at_stops
from tfllm.serving.predictor import Predictor
from tfllm.serving.rest_api import HTTP_STATUS, JsonHandler, PooledHTTPServer
from tfllm.serving.security import AUTHORIZATION, Security
from tfllm.serving.servables import ServingError, Version

log = logging.getLogger(__name__)

ROLES = ("system", "developer", "user", "assistant")
# OpenAI's newer name for the system instructions: rendered as the template's system turn.
ROLE_ALIASES = {"developer": "system"}
MAX_STOPS = 4
INT32_MAX = 2**31 - 1
# Parameters OpenAI defines that this server takes, by endpoint; `user` and `metadata`-like
# fields only label a request. Anything else is refused by name.
CHAT_PARAMS = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
    "stream",
    "stream_options",
    "user",
    "frequency_penalty",
    "presence_penalty",
    "logprobs",
    "response_format",
}
COMPLETION_PARAMS = (CHAT_PARAMS - {"messages", "max_completion_tokens", "response_format"}) | {
    "prompt",
    "echo",
    "best_of",
}
EMBEDDING_PARAMS = {"model", "input", "encoding_format", "user", "dimensions"}


class OpenAIError(Exception):
    """An error answered in OpenAI's format."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = (
            status,
            message,
            param,
            code,
            kind,
        )

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


def _invalid(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param, code)


def _from_serving(error: ServingError) -> OpenAIError:
    status = HTTP_STATUS.get(error.code, 500)
    if error.code == grpc.StatusCode.NOT_FOUND:
        return OpenAIError(404, error.message, "model", "model_not_found")
    kind = "invalid_request_error" if status < 500 else "server_error"
    return OpenAIError(status, error.message, None, None, kind)


def _integer(body: dict, key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"'{key}' must be an integer, got {value!r}", key, "invalid_type")
    if not low <= value <= high:
        raise _invalid(f"'{key}' must be in [{low}, {high}], got {value}", key, "invalid_value")
    return value


def _number(body: dict, key: str, low: float, high: float, default: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(f"'{key}' must be a number, got {value!r}", key, "invalid_type")
    if not low <= value <= high:
        raise _invalid(f"'{key}' must be in [{low}, {high}], got {value}", key, "invalid_value")
    return float(value)


def _unsupported(body: dict, allowed: set[str]) -> None:
    """Refuse parameters this server does not honour, by name (never silently ignored)."""
    for key in sorted(body):
        if key not in allowed:
            raise _invalid(
                f"Unsupported parameter: '{key}' is not supported by this server.",
                key,
                "unsupported_parameter",
            )
    # Accepted only at values that change nothing.
    for key in ("frequency_penalty", "presence_penalty"):
        if body.get(key) not in (None, 0, 0.0):
            raise _invalid(f"Unsupported value: '{key}' must be 0 here.", key, "unsupported_value")
    for key in ("logprobs", "echo"):
        if body.get(key) not in (None, False, 0):
            raise _invalid(
                f"Unsupported value: '{key}' is not supported.", key, "unsupported_value"
            )
    if body.get("best_of") not in (None, 1):
        raise _invalid("Unsupported value: 'best_of' must be 1.", "best_of", "unsupported_value")
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise _invalid(
            'Unsupported value: \'response_format\' must be {"type": "text"}.',
            "response_format",
            "unsupported_value",
        )
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise _invalid("'user' must be a string", "user", "invalid_type")


def _stops(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if (
        not isinstance(stops, list)
        or not all(isinstance(s, str) and s for s in stops)
        or len(stops) > MAX_STOPS
    ):
        raise _invalid(
            f"'stop' must be a non-empty string or a list of at most {MAX_STOPS} of them",
            "stop",
            "invalid_value",
        )
    return tuple(stops)


def text_pieces(text: str) -> list[str]:
    """Streaming chunks of `text`: words with the whitespace before them (they join to `text`).

    >>> text_pieces("Who's  there?\\nNay")
    ["Who's", '  there?', '\\nNay']
    """
    return re.findall(r"\s*\S+|\s+$", text) or ([text] if text else [])


class ModelInfo:
    """What an export's `assets.extra` tells the OpenAI endpoints: its chat template, special
    tokens, context and token limit (read once per loaded version)."""

    def __init__(self, path: str):
        import yaml

        extra = os.path.join(path, "assets.extra")
        try:
            with open(os.path.join(extra, "config.yaml"), encoding="utf-8") as f:
                cfg = yaml.safe_load(f) or {}
        except OSError:
            cfg = {}
        try:
            with open(os.path.join(extra, "tokenizer", "tokenizer.json"), encoding="utf-8") as f:
                self.special_tokens = dict(json.load(f)["config"].get("special_tokens") or {})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.special_tokens = {}
        self.template = (cfg.get("chat") or {}).get("template")
        export = cfg.get("export") or {}
        # The most ids a prompt may have (None: the export cuts prompts to fit, as an
        # encoder-decoder does its sources); exports before `prompt_context` are causal LMs.
        self.context = export.get(
            "prompt_context", (cfg.get("model") or {}).get("max_sequence_length")
        )
        self.token_limit = export.get("max_new_tokens_limit")


class OpenAIHandler(JsonHandler):
    """The `/v1` routes; the server binds `predictor` and `security` on a subclass."""

    log_name = "openai"
    _infos: dict[tuple[str, int], ModelInfo] = {}
    _infos_lock = threading.Lock()

    # ----- plumbing ---------------------------------------------------------------------------
    def _send_events(self, events: Iterable[dict[str, Any]]) -> None:
        """Server-sent events, each flushed as it comes, then `[DONE]`; the connection closes
        after them. An error while they are made goes out as an event of OpenAI's error JSON."""
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()

        def send(event: dict[str, Any]) -> None:
            self.wfile.write(b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n")
            self.wfile.flush()

        try:
            for event in events:
                send(event)
        except (BrokenPipeError, ConnectionResetError):
            return  # the client left: nothing to tell it
        except Exception as e:
            send(self._error_body(e)[1])
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _error_body(self, e: Exception) -> tuple[int, dict[str, Any]]:
        """An exception as an HTTP status and OpenAI's error JSON."""
        if isinstance(e, OpenAIError):
            return e.status, e.body()
        if isinstance(e, ServingError):
            error = _from_serving(e)
            return error.status, error.body()
        if isinstance(e, TimeoutError):
            return 408, OpenAIError(408, "The request did not arrive in time.").body()
        log.exception("OpenAI request failed", exc_info=e)
        return 500, OpenAIError(500, f"{type(e).__name__}: {e}", kind="server_error").body()

    def _handle(self, fn) -> None:
        try:
            if not self.security.authorized(self.headers.get(AUTHORIZATION)):
                self.close_connection = True
                raise OpenAIError(401, "Missing or wrong bearer token.", None, "invalid_api_key")
            result = fn()
            if isinstance(result, Iterator):
                # The first event is made before the status line, so an error in it (a
                # refused request) still gets its own status.
                first = next(result, None)
                self._send_events(chain([first] if first else [], result))
                return
            status, body = 200, result
        except Exception as e:  # keep serving
            status, body = self._error_body(e)
        self._send(status, body)

    def _body(self) -> dict[str, Any]:
        declared = self.headers.get("Content-Length") or "0"
        if not declared.isdigit():
            raise _invalid(f"Content-Length must be a number of bytes, got {declared!r}")
        length = int(declared)
        limit = self.predictor.limits.max_body_bytes
        if length > limit:
            self.close_connection = True
            raise OpenAIError(413, f"The request body ({length} bytes) is over {limit} bytes.")
        data = self.rfile.read(length)
        if len(data) < length:
            raise _invalid(f"The body ended after {len(data)} of {length} bytes.")
        try:
            body = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise _invalid(f"The body is not valid JSON: {type(e).__name__}") from None
        if not isinstance(body, dict):
            raise _invalid("The body must be a JSON object.")
        return body

    # ----- models -----------------------------------------------------------------------------
    def _version(self, model: Any) -> tuple[str, Version]:
        if not isinstance(model, str) or not model:
            raise _invalid("'model' must name a served model", "model", "invalid_value")
        name, _, number = model.partition(":")
        if number and not number.isdigit():
            raise _invalid(f"'model': {model!r} is not NAME or NAME:VERSION", "model")
        try:
            return name, self.predictor.manager.resolve(name, int(number) if number else None)
        except ServingError as e:
            if e.code == grpc.StatusCode.NOT_FOUND:
                raise OpenAIError(
                    404,
                    f"The model '{model}' does not exist. Served: {self._names()}",
                    "model",
                    "model_not_found",
                ) from None
            raise

    def _names(self) -> list[str]:
        manager = self.predictor.manager
        return [
            name
            for name in sorted(manager.models)
            if any(v.state == "AVAILABLE" for v in manager.statuses(name))
        ]

    def _info(self, name: str, version: Version) -> ModelInfo:
        key = (name, version.number)
        with self._infos_lock:
            if key not in self._infos:
                path = os.path.join(self.predictor.manager.models[name].base_path, str(key[1]))
                self._infos[key] = ModelInfo(path)
            return self._infos[key]

    def _model_entry(self, name: str) -> dict[str, Any]:
        version = self.predictor.manager.resolve(name)
        path = os.path.join(self.predictor.manager.models[name].base_path, str(version.number))
        created = int(os.path.getmtime(path)) if os.path.exists(path) else 0
        return {"id": name, "object": "model", "created": created, "owned_by": "tfllm"}

    def _run(self, name: str, version: Version, signature: str, inputs: dict[str, Any]):
        self._require(name, version, signature)
        _, _, outputs = self.predictor.predict(name, version.number, None, signature, inputs)
        return outputs

    def _require(self, name: str, version: Version, signature: str) -> None:
        if signature not in version.signature_defs:
            raise _invalid(
                f"The model '{name}' has no '{signature}' signature (it serves "
                f"{sorted(version.signature_defs)}): this endpoint needs another kind of export.",
                "model",
                "model_not_supported",
            )

    # ----- routes -----------------------------------------------------------------------------
    def do_GET(self):
        def handle():
            path = self.path.split("?")[0].rstrip("/")
            if path == "/v1/models":
                return {"object": "list", "data": [self._model_entry(n) for n in self._names()]}
            if path.startswith("/v1/models/"):
                name, _ = self._version(path[len("/v1/models/") :])
                return self._model_entry(name)
            raise OpenAIError(404, f"Unknown path: GET {path}", code="unknown_url")

        self._handle(handle)

    def do_POST(self):
        routes = {
            "/v1/chat/completions": self._chat,
            "/v1/completions": self._completions,
            "/v1/embeddings": self._embeddings,
        }
        path = self.path.split("?")[0].rstrip("/")

        def handle():
            if path not in routes:
                raise OpenAIError(404, f"Unknown path: POST {path}", code="unknown_url")
            return routes[path](self._body())

        self._handle(handle)

    # ----- generation -------------------------------------------------------------------------
    def _sampling(self, body: dict, info: ModelInfo, length_keys: tuple[str, ...]) -> dict:
        limit = int(info.token_limit or INT32_MAX)
        max_tokens = None
        for key in length_keys:
            value = _integer(body, key, 1, limit)
            if value is not None:
                max_tokens = value
        seed = _integer(body, "seed", -(2**31), INT32_MAX)
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise _invalid("'stream' must be true or false", "stream", "invalid_type")
        options = body.get("stream_options")
        if options is not None:
            if not stream:
                raise _invalid("'stream_options' needs 'stream': true", "stream_options")
            if not isinstance(options, dict) or set(options) - {"include_usage"}:
                raise _invalid("'stream_options' takes only 'include_usage'", "stream_options")
        return {
            "max_new_tokens": max_tokens or 0,  # 0: the export's default
            "temperature": _number(body, "temperature", 0.0, 2.0, 1.0),
            "top_p": _number(body, "top_p", 0.0, 1.0, 1.0),
            "n": _integer(body, "n", 1, self.predictor.limits.max_batch_size) or 1,
            "seed": secrets.randbelow(INT32_MAX) if seed is None else seed,
            "stops": _stops(body),
            "stream": stream,
            "include_usage": bool((options or {}).get("include_usage", False)),
        }

    def _prepare(self, name: str, version: Version, info: ModelInfo, prompts: list[str], s):
        """The checks both paths make: the model generates, and each prompt leaves room.
        Returns the settings to use and the prompt tokens (for `usage`)."""
        self._require(name, version, "generate")  # (an embedding export counts other inputs)
        counted = self._run(
            name,
            version,
            "count_tokens",
            {"prompts": np.asarray([p.encode("utf-8") for p in prompts], dtype=object)},
        )["lengths"]
        for i, tokens in enumerate(counted):
            if info.context and int(tokens) >= int(info.context):
                raise _invalid(
                    f"This model's maximum context length is {info.context} tokens; prompt {i} "
                    f"is {int(tokens)} tokens, which leaves no room for a completion.",
                    "messages" if s.get("chat") else "prompt",
                    "context_length_exceeded",
                )
        if s["top_p"] == 0.0:  # OpenAI allows 0: the most likely token only
            s = dict(s, temperature=0.0, top_p=1.0)
        return s, int(np.sum(counted))

    def _generate(self, name: str, version: Version, prompts: list[str], s):
        """Run `generate` once for all prompts, each `n` times; returns (choices, new tokens)
        with choices as `(text, finish_reason)`, prompt by prompt."""
        rows = [p for p in prompts for _ in range(s["n"])]
        outputs = self._run(
            name,
            version,
            "generate",
            {
                "prompts": np.asarray([p.encode("utf-8") for p in rows], dtype=object),
                "max_new_tokens": np.asarray(s["max_new_tokens"], np.int32),
                "temperature": np.asarray(s["temperature"], np.float32),
                "top_k": np.asarray(0, np.int32),
                "top_p": np.asarray(s["top_p"], np.float32),
                "seed": np.asarray(s["seed"], np.int32),
            },
        )
        choices = []
        for raw, reason in zip(outputs["completions"], outputs["finish_reasons"], strict=True):
            text, stopped = cut_at_stops(raw.decode("utf-8", errors="replace"), s["stops"])
            choices.append((text, "stop" if stopped else reason.decode()))
        return choices, int(np.sum(outputs["lengths"]))

    def _stream(self, name: str, version: Version, info: ModelInfo, prompts: list[str], s):
        """`(choice, text piece, finish_reason or None)` as the text is made, and a function
        giving `usage` once they are all out."""
        s, prompt_tokens = self._prepare(name, version, info, prompts, s)
        if all(signature in version.signature_defs for signature in STREAM_SIGNATURES):
            pieces = IncrementalCompletions(
                lambda signature, inputs: self._run(name, version, signature, inputs),
                [p for p in prompts for _ in range(s["n"])],
                s["max_new_tokens"],
                s["temperature"],
                s["top_p"],
                s["seed"],
                stops=s["stops"],
            )
            return iter(pieces), lambda: _usage(prompt_tokens, pieces.new_tokens)
        choices, new_tokens = self._generate(name, version, prompts, s)
        whole = (
            item
            for i, (text, reason) in enumerate(choices)
            for item in [*((i, piece, None) for piece in text_pieces(text)), (i, "", reason)]
        )
        return whole, lambda: _usage(prompt_tokens, new_tokens)

    def _chat(self, body: dict) -> Any:
        _unsupported(body, CHAT_PARAMS)
        name, version = self._version(body.get("model"))
        info = self._info(name, version)
        messages = _messages(body.get("messages"))
        if not info.template:
            raise _invalid(
                f"The model '{name}' has no chat template (its run has no chat.template); use "
                "/v1/completions, or export a run that has one.",
                "model",
                "model_not_supported",
            )
        settings = self._sampling(body, info, ("max_tokens", "max_completion_tokens"))
        settings["chat"] = True
        try:
            prompt = render_template(info.template, messages, info.special_tokens)
        except ValueError as e:
            raise _invalid(str(e), "messages", "invalid_value") from None
        head = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "created": int(time.time()),
            "model": name,
            "system_fingerprint": f"tfllm-{name}-v{version.number}",
        }
        if settings["stream"]:
            pieces, usage = self._stream(name, version, info, [prompt], settings)

            def events() -> Iterator[dict[str, Any]]:
                chunk = dict(head, object="chat.completion.chunk")
                for i in range(settings["n"]):
                    first = {"role": "assistant", "content": ""}
                    yield dict(chunk, choices=[_delta(i, first, None)])
                for i, piece, reason in pieces:
                    if piece:
                        yield dict(chunk, choices=[_delta(i, {"content": piece}, None)])
                    if reason:
                        yield dict(chunk, choices=[_delta(i, {}, reason)])
                if settings["include_usage"]:
                    yield dict(chunk, choices=[], usage=usage())

            return events()
        settings, prompt_tokens = self._prepare(name, version, info, [prompt], settings)
        choices, new_tokens = self._generate(name, version, [prompt], settings)
        return dict(
            head,
            object="chat.completion",
            choices=[
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": reason,
                    "logprobs": None,
                }
                for i, (text, reason) in enumerate(choices)
            ],
            usage=_usage(prompt_tokens, new_tokens),
        )

    def _completions(self, body: dict) -> Any:
        _unsupported(body, COMPLETION_PARAMS)
        name, version = self._version(body.get("model"))
        info = self._info(name, version)
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if (
            not isinstance(prompts, list)
            or not prompts
            or not all(isinstance(p, str) for p in prompts)
        ):
            raise _invalid(
                "'prompt' must be a string or a non-empty list of strings (token ids are not "
                "accepted: the export tokenizes)",
                "prompt",
                "invalid_value",
            )
        settings = self._sampling(body, info, ("max_tokens",))
        head = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": name,
            "system_fingerprint": f"tfllm-{name}-v{version.number}",
        }

        def choice(i, text, reason):
            return {"index": i, "text": text, "finish_reason": reason, "logprobs": None}

        if settings["stream"]:
            pieces, usage = self._stream(name, version, info, prompts, settings)

            def events() -> Iterator[dict[str, Any]]:
                for i, piece, reason in pieces:
                    if piece or reason:
                        yield dict(head, choices=[choice(i, piece, reason)])
                if settings["include_usage"]:
                    yield dict(head, choices=[], usage=usage())

            return events()
        settings, prompt_tokens = self._prepare(name, version, info, prompts, settings)
        choices, new_tokens = self._generate(name, version, prompts, settings)
        return dict(
            head,
            choices=[choice(i, text, reason) for i, (text, reason) in enumerate(choices)],
            usage=_usage(prompt_tokens, new_tokens),
        )

    def _embeddings(self, body: dict) -> Any:
        _unsupported(body, EMBEDDING_PARAMS)
        name, version = self._version(body.get("model"))
        given = body.get("input")
        texts = [given] if isinstance(given, str) else given
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise _invalid(
                "'input' must be a string or a non-empty list of strings (token ids are not "
                "accepted: the export tokenizes)",
                "input",
                "invalid_value",
            )
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise _invalid(
                "'encoding_format' must be 'float' or 'base64'", "encoding_format", "invalid_value"
            )
        inputs = {"texts": np.asarray([t.encode("utf-8") for t in texts], dtype=object)}
        vectors = np.asarray(self._run(name, version, "embed", inputs)["embeddings"], np.float32)
        dimensions = _integer(body, "dimensions", 1, INT32_MAX)
        if dimensions is not None and dimensions != vectors.shape[-1]:
            raise _invalid(
                f"'dimensions': this model's embeddings have {vectors.shape[-1]}, got {dimensions}",
                "dimensions",
                "unsupported_value",
            )
        tokens = 0
        if "count_tokens" in version.signature_defs:
            tokens = int(np.sum(self._run(name, version, "count_tokens", inputs)["lengths"]))

        def encode(vector: np.ndarray) -> Any:
            if encoding == "base64":
                return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
            return vector.tolist()

        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": encode(v)}
                for i, v in enumerate(vectors)
            ],
            "model": name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def _usage(prompt_tokens: int, new_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": new_tokens,
        "total_tokens": prompt_tokens + new_tokens,
    }


def _delta(index: int, delta: dict, reason: str | None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": reason, "logprobs": None}


def _messages(messages: Any) -> list[dict[str, str]]:
    """OpenAI chat messages as the template's `{"role", "content"}` dicts (text parts joined)."""
    if not isinstance(messages, list) or not messages:
        raise _invalid("'messages' must be a non-empty list", "messages", "invalid_value")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _invalid(f"'{where}' must be an object", where, "invalid_type")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise _invalid(
                f"'{where}.role': {role!r} is not one of {list(ROLES)}",
                f"{where}.role",
                "invalid_value",
            )
        extra = sorted(set(message) - {"role", "content", "name"})
        if extra:
            raise _invalid(
                f"Unsupported parameter: '{where}.{extra[0]}' is not supported by this server.",
                f"{where}.{extra[0]}",
                "unsupported_parameter",
            )
        if isinstance(content, list):  # content parts: text only
            if not all(
                isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                for p in content
            ):
                raise _invalid(
                    f"'{where}.content': only text parts are supported",
                    f"{where}.content",
                    "unsupported_value",
                )
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise _invalid(
                f"'{where}.content' must be a string", f"{where}.content", "invalid_type"
            )
        out.append({"role": ROLE_ALIASES.get(role, role), "content": content})
    return out


def make_openai_server(
    predictor: Predictor,
    host: str,
    port: int,
    security: Security | None = None,
    workers: int = 16,
) -> PooledHTTPServer:
    """The OpenAI-compatible HTTP server over `predictor` (its own port)."""
    security = security or Security()
    handler = type(
        "BoundOpenAIHandler",
        (OpenAIHandler,),
        {"predictor": predictor, "security": security, "_infos": {}},
    )
    return PooledHTTPServer((host, port), handler, workers, security.ssl_context())
