"""A client for exported tfllm models on TF Serving (or `tfllm serve`): gRPC or REST."""

from __future__ import annotations

import json
import numbers
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfllm.serving.protos import apis, ndarray, tensor_proto


@dataclass(frozen=True)
class Completion:
    """One served completion: its text, new token ids and finish reason (`stop` or `length`).
    The fields of `tfllm.generation.prompts.Completion`, kept here because the serving room
    imports nothing of tfllm's."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str


class ServingClientError(RuntimeError):
    """The server answered with an error status, or none answered (`code` holds it: a gRPC
    code name, `UNAVAILABLE` when nothing answers at the address, or `HTTP <status>` over
    REST)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# TF Serving's default ports (`tensorflow_model_server --port=8500 --rest_api_port=8501`).
DEFAULT_PORTS = {"grpc": 8500, "rest": 8501}


class GenerationCalls:
    """A causal LM export's generation signatures as Python calls, over `predict(inputs,
    signature)` and `signatures()`: what `Client` (a server's) and `InProcessExport` (a
    SavedModel loaded in this process) share, so a chat or a command talks to either alike."""

    _signature_names: set[str] | None = None

    def predict(
        self, inputs: dict[str, Any], signature: str = "serving_default"
    ) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def signatures(self) -> dict[str, dict[str, list[str]]]:
        raise NotImplementedError

    def signature_names(self) -> set[str]:
        """The names of the export's signatures (asked of it once; a copy each call)."""
        if self._signature_names is None:
            self._signature_names = set(self.signatures())
        return set(self._signature_names)

    def continues_prompts(self) -> bool:
        """Whether completions continue their prompts (a causal LM's) rather than stand alone
        (an encoder-decoder's, whose `score` signature takes `sources`): how a command prints
        them, after their prompt or on their own."""
        score = self.signatures().get("score")
        return not (score and "sources" in score["inputs"])

    def complete(
        self,
        prompts: str | Sequence[str],
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> list[Completion]:
        """Completions of `prompts` with their finish reasons (`stop` or `length`): the export's
        settings (`serving_default`) unless some are given; then `generate` with the rest at
        greedy defaults and `max_new_tokens` at the export's (sent as 0)."""
        single = isinstance(prompts, str)
        batch = np.asarray([prompts] if single else list(prompts), dtype=object)
        signature, inputs = generation_request(
            batch, max_new_tokens, temperature, top_k, top_p, seed
        )
        return completions(self.predict(inputs, signature=signature))

    def stream(
        self,
        prompt: str,
        max_new_tokens: int = 0,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: Sequence[str] = (),
    ) -> Iterator[tuple[str, str | None]]:
        """One completion of `prompt` in pieces as the server decodes them: `(text, None)`
        items, then `(the last text, finish reason)`; the texts join to what `complete` answers
        with the same settings, cut before the first of the `stop` strings.

        With the export's streaming signatures (`prompt_ids`, `generate_ids`,
        `completion_text`) the pieces come as tokens are made (see
        `tfllm.serving.openai_stream`); an export without them answers in one piece.
        """
        from tfllm.serving.openai_stream import (
            STREAM_SIGNATURES,
            IncrementalCompletions,
            cut_at_stops,
        )

        if not set(STREAM_SIGNATURES) <= self.signature_names():
            (whole,) = self.complete([prompt], max_new_tokens, temperature, top_k, top_p, seed)
            text, cut = cut_at_stops(whole.text, stop)
            yield text, "stop" if cut else whole.finish_reason
            return
        pieces = IncrementalCompletions(
            lambda signature, inputs: self.predict(inputs, signature=signature),
            [prompt],
            max_new_tokens,
            temperature,
            top_p,
            seed,
            stops=stop,
            top_k=top_k,
        )
        for _, text, reason in pieces:
            yield text, reason

    def generate(
        self,
        prompts: str | Sequence[str],
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> list[str]:
        """Completion texts of `prompts` (the `text` of each of `complete`'s answers)."""
        found = self.complete(prompts, max_new_tokens, temperature, top_k, top_p, seed)
        return [c.text for c in found]

    def score(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Per-token log-probabilities and log-likelihoods of `texts`."""
        return self.predict({"texts": np.asarray(list(texts), dtype=object)}, signature="score")

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        """How many ids the served causal LM reads for each prompt (its `count_tokens`
        signature: bos included, before the context crop)."""
        out = self.predict(
            {"prompts": np.asarray(list(prompts), dtype=object)}, signature="count_tokens"
        )
        return [int(n) for n in np.asarray(out["lengths"]).reshape(-1)]

    def describe(self, keys: Sequence[str] = ()) -> dict[str, Any]:
        """What the export says of itself (its `describe` signature), every entry or `keys`:
        `chat_template` (None without one), `special_tokens` (`{role: token}`), `context`,
        `max_new_tokens` (its default), `max_new_tokens_limit` and `stop`. Raises
        `LookupError` for an export without the signature (one made before it existed)."""
        if "describe" not in self.signature_names():
            raise LookupError(
                "the export has no 'describe' signature (it was made before tfllm exports "
                "described themselves); export the model again, or read its version folder"
            )
        out = self.predict({"keys": np.asarray(list(keys), dtype=object)}, signature="describe")
        names = np.asarray(out["keys"]).reshape(-1)
        values = np.asarray(out["values"]).reshape(-1)
        return {_text(k): json.loads(_text(v)) for k, v in zip(names, values, strict=True)}


class Client(GenerationCalls):
    """Talks to a model served by TF Serving's APIs.

    Args:
        host: server address.
        port: gRPC port (transport `grpc`) or REST port (transport `rest`); None: TF
            Serving's defaults, 8500 for gRPC and 8501 for REST (`tfllm serve`'s too).
        model: the served model name.
        transport: `grpc` (tensorflow-serving-api's `PredictionServiceStub`) or `rest`.
        version: a specific version (default: the newest available).
        timeout: seconds per request.
        token: a bearer token sent with every request (a server started with `auth_token`).
        tls: connect over TLS (on by itself when `tls_ca_file` is given); the server's
            certificate is checked against `tls_ca_file`, or the system's authorities.
        tls_ca_file: PEM certificates that sign the server's certificate.
        tls_cert_file: this client's PEM certificate chain (a server that asks for one).
        tls_key_file: this client's PEM private key.

    Example:

    >>> client = Client(port=8500, model="shakespeare")  # doctest: +SKIP
    >>> client.generate(["ROMEO:"], max_new_tokens=32)  # doctest: +SKIP
    ['...']
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        model: str = "default",
        transport: str = "grpc",
        version: int | None = None,
        timeout: float = 120.0,
        token: str | None = None,
        tls: bool = False,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
    ):
        if transport not in ("grpc", "rest"):
            raise ValueError(f"transport must be 'grpc' or 'rest', got {transport!r}")
        if bool(tls_cert_file) != bool(tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file: give both, or neither")
        if port is None:
            port = DEFAULT_PORTS[transport]
        self.host, self.port, self.model = host, port, model
        self.transport, self.version, self.timeout = transport, version, timeout
        self.token = token
        self.tls = bool(tls or tls_ca_file or tls_cert_file)
        self.tls_ca_file, self.tls_cert_file, self.tls_key_file = (
            tls_ca_file,
            tls_cert_file,
            tls_key_file,
        )
        # gRPC metadata sent with every call (the bearer token).
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._channel = None
        self._stub = None
        self._signature_names: set[str] | None = None

    @staticmethod
    def _read(path: str | None) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as f:
            return f.read()

    # ----- transport --------------------------------------------------------------------------
    def _grpc(self):
        if self._stub is None:
            import grpc

            (prediction_service_pb2_grpc,) = apis(
                "tensorflow_serving.apis.prediction_service_pb2_grpc"
            )
            target, options = (
                f"{self.host}:{self.port}",
                [("grpc.max_receive_message_length", 64 << 20)],
            )
            if self.tls:
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=self._read(self.tls_ca_file),
                    private_key=self._read(self.tls_key_file),
                    certificate_chain=self._read(self.tls_cert_file),
                )
                self._channel = grpc.secure_channel(target, credentials, options=options)
            else:
                self._channel = grpc.insecure_channel(target, options=options)
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        return self._stub

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = self._stub = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _url(self, suffix: str) -> str:
        version = f"/versions/{self.version}" if self.version is not None else ""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}/v1/models/{self.model}{version}{suffix}"

    def _ssl_context(self) -> Any:
        if not self.tls:
            return None
        import ssl

        context = ssl.create_default_context(cafile=self.tls_ca_file)
        if self.tls_cert_file:
            context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        return context

    def _rest(self, suffix: str, body: dict | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self._url(suffix), data=data, headers=headers)
        try:
            with urllib.request.urlopen(
                request, timeout=self.timeout, context=self._ssl_context()
            ) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read().decode("utf-8")).get("error", str(e))
            except (ValueError, AttributeError):
                message = str(e)
            raise ServingClientError(f"HTTP {e.code}", message) from None
        except urllib.error.URLError as e:  # no HTTP answer at all: as gRPC reports it
            raise ServingClientError("UNAVAILABLE", f"{self._url(suffix)}: {e.reason}") from None
        except TimeoutError:
            raise ServingClientError(
                "DEADLINE_EXCEEDED", f"{self._url(suffix)}: no answer in {self.timeout} s"
            ) from None

    def predict(
        self, inputs: dict[str, Any], signature: str = "serving_default"
    ) -> dict[str, np.ndarray]:
        """Call a signature with named inputs; returns its outputs as numpy arrays."""
        if self.transport == "rest":
            body = {"signature_name": signature, "inputs": _jsonable(inputs)}
            outputs = self._rest(":predict", body)["outputs"]
            if not isinstance(outputs, dict):
                outputs = {"output": outputs}
            return {k: _from_json(v) for k, v in outputs.items()}
        import grpc

        (predict_pb2,) = apis("tensorflow_serving.apis.predict_pb2")

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model
        request.model_spec.signature_name = signature
        if self.version is not None:
            request.model_spec.version.value = self.version
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tensor_proto(value))
        try:
            response = self._grpc().Predict(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise ServingClientError(e.code().name, e.details()) from None
        return {k: ndarray(v) for k, v in response.outputs.items()}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Sentence embeddings `(N, D)` from an exported embedding model."""
        out = self.predict({"texts": np.asarray(list(texts), dtype=object)}, signature="embed")
        return np.asarray(out["embeddings"], np.float32)

    def _examples_call(self, method: str, rows: list[dict[str, str]], signature: str):
        """Classify/Regress with `tf.Example`s of string features (`rows`)."""
        if self.transport == "rest":
            body = {"signature_name": signature, "examples": rows}
            return self._rest(f":{method.lower()}", body)["result"]
        import grpc

        example_pb2, classification_pb2, regression_pb2 = apis(
            "tensorflow.core.example.example_pb2",
            "tensorflow_serving.apis.classification_pb2",
            "tensorflow_serving.apis.regression_pb2",
        )

        if method == "Classify":
            request = classification_pb2.ClassificationRequest()
        else:
            request = regression_pb2.RegressionRequest()
        request.model_spec.name = self.model
        request.model_spec.signature_name = signature
        if self.version is not None:
            request.model_spec.version.value = self.version
        for row in rows:
            example = example_pb2.Example()
            for key, text in row.items():
                example.features.feature[key].bytes_list.value.append(text.encode("utf-8"))
            request.input.example_list.examples.append(example)
        try:
            response = getattr(self._grpc(), method)(
                request, timeout=self.timeout, metadata=self._metadata
            )
        except grpc.RpcError as e:
            raise ServingClientError(e.code().name, e.details()) from None
        if method == "Classify":
            return [
                [[c.label, c.score] for c in result.classes]
                for result in response.result.classifications
            ]
        return [r.value for r in response.result.regressions]

    def classify(
        self,
        texts: Sequence[str],
        text_pairs: Sequence[str] | None = None,
        signature: str = "classification",
        text_feature: str = "text",
        pair_feature: str = "text_pair",
    ) -> list[dict[str, float]]:
        """`{label: probability}` per text through TF Serving's Classify API (a classifier
        export's `classification` signature; `tf.Example`s with `text_feature` and, for pair
        tasks, `pair_feature`)."""
        rows = [{text_feature: t} for t in texts]
        if text_pairs is not None:
            for row, pair in zip(rows, text_pairs, strict=True):
                row[pair_feature] = pair
        return [
            {label: score for label, score in r}
            for r in self._examples_call("Classify", rows, signature)
        ]

    def regress(
        self,
        prompts: Sequence[str],
        replies: Sequence[str],
        signature: str = "regression",
        prompt_feature: str = "prompt",
        reply_feature: str = "reply",
    ) -> list[float]:
        """A reward model's score per (prompt, reply) through TF Serving's Regress API."""
        rows = [
            {prompt_feature: p, reply_feature: r} for p, r in zip(prompts, replies, strict=True)
        ]
        return [float(v) for v in self._examples_call("Regress", rows, signature)]

    def fill_mask(self, texts: Sequence[str]) -> list[list[list[tuple[str, float]]]]:
        """`[text][mask] -> [(filler, probability), ...]` from a masked LM's `fill_mask`."""
        out = self.predict({"texts": np.asarray(list(texts), dtype=object)}, signature="fill_mask")
        result = []
        for i, count in enumerate(np.asarray(out["mask_counts"]).reshape(-1)):
            result.append(
                [
                    [
                        (_text(w), float(p))
                        for w, p in zip(out["fillers"][i, m], out["scores"][i, m], strict=True)
                    ]
                    for m in range(int(count))
                ]
            )
        return result

    def tag(self, texts: Sequence[str]) -> list[dict[str, list[dict[str, Any]]]]:
        """A token classifier's `tag`: per text, `{"words": [{word, label, score, start,
        end}], "entities": [{label, text, score, start, end}]}` (character offsets)."""
        out = self.predict({"texts": np.asarray(list(texts), dtype=object)}, signature="tag")

        def value(name: str, i: int, k: int) -> Any:
            v = out[name][i, k]
            return _text(v) if isinstance(v, (bytes, str)) else v.item()

        result = []
        for i in range(len(out["word_counts"])):
            words = range(int(out["word_counts"][i]))
            entities = range(int(out["entity_counts"][i]))
            word_keys = ("word", "label", "score", "start", "end")
            entity_keys = ("label", "text", "score", "start", "end")
            result.append(
                {
                    "words": [{key: value(f"{key}s", i, k) for key in word_keys} for k in words],
                    "entities": [
                        {key: value(f"entity_{key}s", i, k) for key in entity_keys}
                        for k in entities
                    ],
                }
            )
        return result

    def answer(self, questions: Sequence[str], contexts: Sequence[str]) -> list[dict[str, Any]]:
        """An extractive QA model's `answer`: per question, `{answer, start, end, score}`
        (character offsets `[start, end)` into its context)."""
        out = self.predict(
            {
                "questions": np.asarray(list(questions), dtype=object),
                "contexts": np.asarray(list(contexts), dtype=object),
            },
            signature="answer",
        )
        return [
            {
                "answer": _text(out["answers"][i]),
                "start": int(out["starts"][i]),
                "end": int(out["ends"][i]),
                "score": float(out["scores"][i]),
            }
            for i in range(len(out["answers"]))
        ]

    def signatures(self) -> dict[str, dict[str, list[str]]]:
        """`{signature: {"inputs": [...], "outputs": [...]}}` from the model's metadata."""
        if self.transport == "rest":
            meta = self._rest("/metadata")["metadata"]["signature_def"]["signatureDef"]
            return {
                name: {
                    "inputs": sorted(s.get("inputs", {})),
                    "outputs": sorted(s.get("outputs", {})),
                }
                for name, s in meta.items()
            }
        import grpc

        (get_model_metadata_pb2,) = apis("tensorflow_serving.apis.get_model_metadata_pb2")

        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = self.model
        if self.version is not None:
            request.model_spec.version.value = self.version
        request.metadata_field.append("signature_def")
        try:
            response = self._grpc().GetModelMetadata(
                request, timeout=self.timeout, metadata=self._metadata
            )
        except grpc.RpcError as e:
            raise ServingClientError(e.code().name, e.details()) from None
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return {
            name: {"inputs": sorted(s.inputs), "outputs": sorted(s.outputs)}
            for name, s in signature_map.signature_def.items()
        }


def generation_request(
    prompts: Any,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """`(signature, inputs)` of a generation request: `serving_default` when no setting is
    given, else `generate` with the unset ones greedy and `max_new_tokens` 0 (the export's).

    Raises:
        TypeError: a setting of the wrong type (the export checks the ranges).
    """
    if all(s is None for s in (max_new_tokens, temperature, top_k, top_p, seed)):
        return "serving_default", {"prompts": prompts}
    for name, value in (("max_new_tokens", max_new_tokens), ("top_k", top_k), ("seed", seed)):
        if value is not None and (
            not isinstance(value, numbers.Integral) or isinstance(value, bool)
        ):
            raise TypeError(f"{name} must be a whole number, got {value!r}")
    for name, value in (("temperature", temperature), ("top_p", top_p)):
        if value is not None and (not isinstance(value, numbers.Real) or isinstance(value, bool)):
            raise TypeError(f"{name} must be a number, got {value!r}")
    return "generate", {
        "prompts": prompts,
        "max_new_tokens": np.int32(max_new_tokens or 0),
        "temperature": np.float32(0.0 if temperature is None else temperature),
        "top_k": np.int32(top_k or 0),
        "top_p": np.float32(1.0 if top_p is None else top_p),
        "seed": np.int32(seed or 0),
    }


def completions(outputs: dict[str, Any]) -> list[Completion]:
    """A generation signature's outputs as `Completion`s (an export made before finish reasons
    existed reads as `length`)."""
    texts = [_text(t) for t in outputs["completions"]]
    reasons = outputs.get("finish_reasons")
    reasons = [_text(r) for r in reasons] if reasons is not None else ["length"] * len(texts)
    tokens = outputs.get("tokens")
    ids = (
        [tuple(int(t) for t in np.ravel(row) if t >= 0) for row in tokens]
        if tokens is not None
        else [()] * len(texts)
    )
    return [Completion(t, i, r) for t, i, r in zip(texts, ids, reasons, strict=True)]


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _jsonable(inputs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in inputs.items():
        array = np.asarray(value)
        if array.dtype.kind in ("O", "S", "U"):
            out[key] = [_text(v) for v in array.reshape(-1)] if array.ndim else _text(array.item())
        else:
            out[key] = array.tolist()
    return out


def _from_json(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind == "U":
        return array.astype(object)
    return array
