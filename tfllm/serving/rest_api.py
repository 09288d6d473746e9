"""TF Serving's REST API:
`/v1/models/NAME[/versions/N | /labels/L][:predict | :classify | :regress | /metadata]`."""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import grpc
import numpy as np

from tfllm.serving.examples import (
    CLASSIFY_METHOD,
    REGRESS_METHOD,
    classification_rows,
    regression_values,
    with_context,
)
from tfllm.serving.predictor import Predictor
from tfllm.serving.security import AUTHORIZATION, Security
from tfllm.serving.servables import ServingError

log = logging.getLogger(__name__)

_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<action>:predict|:classify|:regress|/metadata)?$"
)
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
}


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _to_numpy(value: Any, dtype, name: str = "input") -> np.ndarray:
    """A JSON value as numpy of the signature's dtype (`{"b64": ...}` for raw bytes): strings
    must be valid UTF-8 text, integers integral and within the dtype's range, floats finite."""

    def decode(v):
        if isinstance(v, dict) and set(v) == {"b64"}:
            try:
                return base64.b64decode(v["b64"], validate=True)
            except (TypeError, ValueError):
                raise _invalid(f"{name}: 'b64' must hold base64 text") from None
        if isinstance(v, list):
            return [decode(x) for x in v]
        if isinstance(v, str):
            try:
                return v.encode("utf-8")
            except UnicodeEncodeError:
                raise _invalid(f"{name}: a string is not valid Unicode text") from None
        return v

    if dtype.name == "string":
        array = np.asarray(decode(value), dtype=object)
        if array.size and not all(isinstance(x, bytes) for x in array.reshape(-1)):
            raise _invalid(f"{name}: expected strings")
        return array
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError):
        raise _invalid(f"{name}: expected a number or a rectangular list of numbers") from None
    if raw.dtype == object or raw.dtype.kind not in "biuf":
        raise _invalid(f"{name}: expected numbers of type {dtype.name}")
    target = np.dtype(dtype.as_numpy_dtype)
    if raw.dtype.kind == "f" and not np.all(np.isfinite(raw)):
        raise _invalid(f"{name}: numbers must be finite")
    if target.kind in "iu":
        if raw.dtype.kind == "f" and not np.all(raw == np.round(raw)):
            raise _invalid(f"{name}: expected whole numbers ({dtype.name})")
        info = np.iinfo(target)
        if raw.size and (raw.min() < info.min or raw.max() > info.max):
            raise _invalid(f"{name}: out of range for {dtype.name}")
    if target.kind == "b" and raw.dtype.kind != "b":
        raise _invalid(f"{name}: expected true or false")
    return raw.astype(target)


def _to_json(value: np.ndarray) -> Any:
    if value.dtype.kind in ("O", "S"):
        flat = [v.decode("utf-8", errors="replace") for v in value.reshape(-1)]
        return np.asarray(flat, dtype=object).reshape(value.shape).tolist()
    return value.tolist()


def _is_value(row: Any) -> bool:
    """Whether a JSON value is one input's value: anything but an object, or TF Serving's
    `{"b64": "..."}` bytes object."""
    return not isinstance(row, dict) or set(row) == {"b64"}


class JsonHandler(BaseHTTPRequestHandler):
    """What the server's HTTP APIs share (TF Serving's REST, the OpenAI-compatible one): the
    bound predictor and security, the read timeout, and JSON answers."""

    predictor: Predictor  # set on the subclass the server makes
    security: Security = Security()
    protocol_version = "HTTP/1.1"
    log_name = "http"

    def setup(self) -> None:
        # A stalled or idle connection is closed (a half-sent body answered 408), not held.
        self.timeout = self.predictor.limits.read_timeout_seconds
        super().setup()

    def log_message(self, fmt, *args):
        log.debug(f"{self.log_name}: " + fmt, *args)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="tfllm"')
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class RestHandler(JsonHandler):
    log_name = "rest"

    def _route(self):
        match = _PATH.match(self.path.split("?")[0])
        if not match:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {self.path}")
        version = int(match["version"]) if match["version"] else None
        return match["name"], version, match["label"], match["action"]

    def _handle(self, fn) -> None:
        try:
            if not self.security.authorized(self.headers.get(AUTHORIZATION)):
                # Answered without reading the body; the connection is not reused.
                self.close_connection = True
                self._send(401, {"error": "missing or wrong bearer token"})
                return
            status, body = fn()
        except ServingError as e:
            status, body = HTTP_STATUS.get(e.code, 500), {"error": e.message}
        except TimeoutError:
            status, body = 408, {"error": "the request did not arrive in time"}
        except Exception as e:  # keep serving
            log.exception("REST request failed")
            status, body = 500, {"error": f"{type(e).__name__}: {e}"}
        self._send(status, body)

    def do_GET(self):
        def handle():
            name, version, label, action = self._route()
            if action in (":predict", ":classify", ":regress"):
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"{action[1:]} needs POST")
            if action == "/metadata":
                from google.protobuf import json_format

                resolved, signature_map = self.predictor.metadata(name, version, label)
                return 200, {
                    "model_spec": {
                        "name": name,
                        "signature_name": "",
                        "version": str(resolved.number),
                    },
                    "metadata": {"signature_def": json_format.MessageToDict(signature_map)},
                }
            statuses = self.predictor.manager.statuses(name, version, label)
            return 200, {
                "model_version_status": [
                    {
                        "version": str(v.number),
                        "state": v.state,
                        "status": {
                            "error_code": "UNKNOWN" if v.error else "OK",
                            "error_message": v.error,
                        },
                    }
                    for v in statuses
                ]
            }

        self._handle(handle)

    def do_POST(self):
        def handle():
            name, version, label, action = self._route()
            if action not in (":predict", ":classify", ":regress"):
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT, "POST serves :predict, :classify, :regress"
                )
            declared = self.headers.get("Content-Length") or "0"
            if not declared.isdigit():
                raise _invalid(f"Content-Length must be a number of bytes, got {declared!r}")
            length = int(declared)
            limit = self.predictor.limits.max_body_bytes
            if length > limit:
                self.close_connection = True  # the unread body must not be taken for a request
                raise ServingError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the request body ({length} bytes) is over the limit of {limit}",
                )
            data = self.rfile.read(length)
            if len(data) < length:
                raise _invalid(f"the body ended after {len(data)} of {length} bytes")
            try:
                body = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise _invalid(f"JSON Parse error: {e}") from None
            except RecursionError:
                raise _invalid("JSON Parse error: nested too deeply") from None
            if action != ":predict":
                return self._examples(name, version, label, action, body)
            if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "the request body must be an object with exactly one of 'instances' or "
                    "'inputs'",
                )
            signature_name = body.get("signature_name", "")
            if not isinstance(signature_name, str):
                raise _invalid("'signature_name' must be a string")
            resolved = self.predictor.manager.resolve(name, version, label)
            sig_name, fn, _ = self.predictor.signature(resolved, signature_name)
            specs = fn.structured_input_signature[1]
            if "instances" in body:
                rows = body["instances"]
                if not isinstance(rows, list) or not rows:
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT, "'instances' must be a non-empty list"
                    )
                if len(specs) == 1 and all(_is_value(r) for r in rows):
                    raw = {next(iter(specs)): rows}
                elif all(isinstance(r, dict) and not _is_value(r) for r in rows):
                    raw = {k: [r.get(k) for r in rows] for k in rows[0]}
                else:
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "'instances' must all be objects (one key per input) or all values",
                    )
            else:
                raw = body["inputs"]
                if _is_value(raw):
                    if len(specs) != 1:
                        raise ServingError(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"'inputs' must be an object with keys {sorted(specs)}",
                        )
                    raw = {next(iter(specs)): raw}
            inputs = {
                k: _to_numpy(v, specs[k].dtype, k) if k in specs else np.asarray(v, dtype=object)
                for k, v in raw.items()
            }
            _, _, outputs = self.predictor.predict(name, resolved.number, None, sig_name, inputs)
            if "instances" in body:
                if len(outputs) == 1:
                    return 200, {"predictions": _to_json(next(iter(outputs.values())))}
                n = len(next(iter(outputs.values())))
                return 200, {
                    "predictions": [
                        {k: _to_json(v[i : i + 1])[0] for k, v in outputs.items()} for i in range(n)
                    ]
                }
            if len(outputs) == 1:
                return 200, {"outputs": _to_json(next(iter(outputs.values())))}
            return 200, {"outputs": {k: _to_json(v) for k, v in outputs.items()}}

        self._handle(handle)

    def _examples(self, name, version, label, action, body) -> tuple[int, dict[str, Any]]:
        """`:classify` / `:regress`: TF Serving's `{"examples": [...], "context": {...}}`."""
        if not isinstance(body, dict) or not isinstance(body.get("examples"), list):
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the request body must be an object with an 'examples' list",
            )
        unknown = sorted(set(body) - {"examples", "context", "signature_name"})
        if unknown:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"unknown keys {unknown}")
        signature_name = body.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "signature_name must be a string")
        context = example_from_json(body["context"], "context") if "context" in body else None
        own = [example_from_json(f, f"examples[{i}]") for i, f in enumerate(body["examples"])]
        method = CLASSIFY_METHOD if action == ":classify" else REGRESS_METHOD
        _, _, outputs = self.predictor.run_examples(
            name, version, label, signature_name, with_context(context, own), method
        )
        if action == ":classify":
            rows = classification_rows(outputs)
            return 200, {"result": [[[lbl, score] for lbl, score in row] for row in rows]}
        return 200, {"result": regression_values(outputs)}


def example_from_json(features: Any, where: str):
    """A `tf.Example` from TF Serving's JSON form: `{"feature": value}` where a value (or a list
    of values of one kind) is a string (bytes), `{"b64": ...}` (bytes), an int (int64) or a
    float (float)."""
    from tensorflow.core.example import example_pb2

    if not isinstance(features, dict):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"{where} must be an object")
    example = example_pb2.Example()
    for key, value in features.items():
        values = value if isinstance(value, list) else [value]
        feature = example.features.feature[key]
        if values and all(isinstance(v, (str, dict)) for v in values):
            out = []
            for v in values:
                if isinstance(v, dict):
                    if set(v) != {"b64"} or not isinstance(v["b64"], str):
                        raise ServingError(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"{where}: feature '{key}': an object value must be {{\"b64\": "
                            "string}",
                        )
                    try:
                        out.append(base64.b64decode(v["b64"], validate=True))
                    except ValueError:
                        raise ServingError(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"{where}: feature '{key}': invalid base64",
                        ) from None
                else:
                    try:
                        out.append(v.encode("utf-8"))
                    except UnicodeEncodeError:
                        raise ServingError(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"{where}: feature '{key}' is not valid Unicode",
                        ) from None
            feature.bytes_list.value.extend(out)
        elif values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            feature.int64_list.value.extend(values)
        elif values and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        ):
            feature.float_list.value.extend(float(v) for v in values)
        else:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{where}: feature '{key}' must be strings, {{\"b64\": ...}}, ints or floats, "
                "all of one kind",
            )
    return example


class PooledHTTPServer(HTTPServer):
    """An HTTP server whose connections are handled by a fixed pool of worker threads (more
    connections wait their turn instead of each taking a thread), optionally over TLS (the
    handshake runs in the worker, under the read timeout, never in the accepting thread)."""

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        workers: int,
        ssl_context: ssl.SSLContext | None = None,
    ):
        super().__init__(address, handler)
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tfllm-rest")
        self._ssl = ssl_context
        self._open: set[socket.socket] = set()  # connections being handled, closed at shutdown
        self._open_lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self._ssl is not None:
            sock = self._ssl.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request(self, request, client_address) -> None:
        self._pool.submit(self._work, request, client_address)

    def _work(self, request, client_address) -> None:
        with self._open_lock:
            self._open.add(request)
        try:
            if isinstance(request, ssl.SSLSocket):
                request.settimeout(self.RequestHandlerClass.predictor.limits.read_timeout_seconds)
                request.do_handshake()
            self.finish_request(request, client_address)
        except (OSError, ssl.SSLError) as e:  # a client that went away or spoke no TLS
            log.debug("rest: connection from %s ended: %s", client_address, e)
        except Exception:  # noqa: BLE001 - one connection's failure must not stop the server
            log.exception("rest: connection from %s failed", client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)
            self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        with self._open_lock:
            for request in list(self._open):  # wake workers blocked reading a slow client
                try:
                    request.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._pool.shutdown(wait=False, cancel_futures=True)


def make_rest_server(
    predictor: Predictor,
    host: str,
    port: int,
    security: Security | None = None,
    workers: int = 32,
) -> PooledHTTPServer:
    security = security or Security()
    handler = type(
        "BoundRestHandler", (RestHandler,), {"predictor": predictor, "security": security}
    )
    return PooledHTTPServer((host, port), handler, workers, security.ssl_context())
