"""Running a signature for a request: validation as TF Serving does it, and server-side batching."""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from tfllm.serving.examples import check_method
from tfllm.serving.servables import ServableManager, ServingError, Version, status_code

log = logging.getLogger(__name__)


@dataclass
class BatchingConfig:
    """TF Serving's `--batching_parameters_file` settings that the development server honours.

    Attributes:
        max_batch_size: most rows one batched call runs.
        batch_timeout_micros: how long the first request of a batch waits for company.
        num_batch_threads: batches run at once.
    """

    max_batch_size: int = 32
    batch_timeout_micros: int = 5000
    num_batch_threads: int = 2


@dataclass
class ServingLimits:
    """What one request may ask of the server; past a limit it is refused before the work (and,
    for gRPC tensors, before the memory) is spent.

    Attributes:
        max_body_bytes: the largest REST body read (a longer one is answered 429 unread).
        max_batch_size: most rows (dimension 0) one request may send.
        max_tensor_elements: most elements of one input tensor, counted from its declared shape
            before it is allocated (a few bytes can declare a huge shape).
        max_string_bytes: the longest single string (a prompt) accepted.
        max_concurrent_runs: signatures running at once; requests beyond wait, and those whose
            client has gone or whose deadline has passed while waiting are skipped.
        read_timeout_seconds: how long a REST connection may stay silent (a slow or stalled
            client) before it is answered 408 and closed.
    """

    max_body_bytes: int = 64 << 20
    max_batch_size: int = 1024
    max_tensor_elements: int = 1 << 22
    max_string_bytes: int = 1 << 20
    max_concurrent_runs: int = 4
    read_timeout_seconds: float = 30.0


# Whether the client still wants the answer: `None` when it does, else why not (a status and
# a message). gRPC requests pass one built from their context; a REST request has none.
Liveness = Callable[[], "tuple[grpc.StatusCode, str] | None"]


def parse_batching_file(path: str) -> BatchingConfig:
    """Read a text-format `BatchingParameters` file (`max_batch_size { value: 32 }` ...)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    values = dict(re.findall(r"(\w+)\s*\{\s*value:\s*(\d+)\s*\}", text))
    config = BatchingConfig()
    for key in ("max_batch_size", "batch_timeout_micros", "num_batch_threads"):
        if key in values:
            setattr(config, key, int(values[key]))
    if config.max_batch_size <= 0 or config.num_batch_threads <= 0:
        raise ValueError(f"batching_parameters_file: {path}: sizes must be positive")
    return config


def _numpy_dtype_matches(array: np.ndarray, tf_dtype) -> bool:
    if tf_dtype.name == "string":
        return array.dtype.kind in ("O", "S")
    return array.dtype == tf_dtype.as_numpy_dtype


def first_line(message: str) -> str:
    """The useful line of a TensorFlow error: an assertion's own message; else, for a graph
    execution error, the op's own message (the line before its `[[{{node ...}}]]` marker);
    else the first line."""
    match = re.search(r"assertion failed: \[(.*)\]", message)  # to the last ] of its line
    if match:
        return match.group(1)
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return message
    if lines[0].startswith("Graph execution error"):
        marker = next((i for i, line in enumerate(lines) if line.startswith("[[")), len(lines))
        useful = [
            line
            for line in lines[1:marker]
            if not line.startswith(("Detected at node", "<stack traces", "File ", "  "))
        ]
        if useful:
            return re.sub(r"^Name: <unknown>, ", "", useful[-1])
    return lines[0]


@dataclass
class _Pending:
    inputs: dict[str, np.ndarray]
    rows: int
    future: Future
    live: Liveness | None = None

    def gone(self) -> tuple[grpc.StatusCode, str] | None:
        return self.live() if self.live is not None else None


class Predictor:
    """Validates requests against SignatureDefs and runs them, batching concurrent ones.

    Args:
        manager: the loaded models.
        batching: batch concurrent requests to the same signature (None: run each alone).
    """

    def __init__(
        self,
        manager: ServableManager,
        batching: BatchingConfig | None = None,
        limits: ServingLimits | None = None,
    ):
        self.manager = manager
        self.batching = batching
        self.limits = limits or ServingLimits()
        self._queues: dict[tuple, queue.Queue] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(self.limits.max_concurrent_runs)
        self.skipped = 0  # requests dropped unrun: their client had gone or their deadline passed
        self.runs = 0  # signature calls made

    def stop(self) -> None:
        self._stop.set()

    # ----- validation -------------------------------------------------------------------------
    def signature(self, version: Version, name: str):
        name = name or "serving_default"
        if name not in version.signature_defs or name not in version.loaded.signatures:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f'Serving signature key "{name}" not found. Available: '
                f"{sorted(version.signature_defs)}",
            )
        return name, version.loaded.signatures[name], version.signature_defs[name]

    def check_limits(self, inputs: dict[str, np.ndarray]) -> None:
        """Refuse inputs over the configured sizes (INVALID_ARGUMENT, naming the input)."""
        limits = self.limits
        for key, value in inputs.items():
            if value.ndim and value.shape[0] > limits.max_batch_size:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input '{key}' has {value.shape[0]} rows; the limit is "
                    f"{limits.max_batch_size} per request",
                )
            if value.size > limits.max_tensor_elements:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input '{key}' has {value.size} elements; the limit is "
                    f"{limits.max_tensor_elements}",
                )
            if value.dtype.kind in ("O", "S") and value.size:
                longest = max(len(v) if isinstance(v, bytes) else 0 for v in value.reshape(-1))
                if longest > limits.max_string_bytes:
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"input '{key}' holds a string of {longest} bytes; the limit is "
                        f"{limits.max_string_bytes}",
                    )

    @staticmethod
    def check_inputs(sig_name: str, fn, inputs: dict[str, np.ndarray]) -> None:
        specs = fn.structured_input_signature[1]
        if set(inputs) != set(specs):
            extra = sorted(set(inputs) - set(specs))
            missing = sorted(set(specs) - set(inputs))
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input size does not match signature '{sig_name}': {len(inputs)}!="
                f"{len(specs)}. Sent extra: {extra}. Missing but required: {missing}.",
            )
        for key, spec in specs.items():
            value = inputs[key]
            if not _numpy_dtype_matches(value, spec.dtype):
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input '{key}' expects {spec.dtype.name} but {value.dtype} was provided",
                )
            if not spec.shape.is_compatible_with(value.shape):
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input '{key}' expects shape {spec.shape} but {list(value.shape)} was "
                    "provided",
                )

    # ----- running ----------------------------------------------------------------------------
    def predict(
        self,
        model: str,
        version: int | None,
        label: str | None,
        signature_name: str,
        inputs: dict[str, np.ndarray],
        output_filter: list[str] | None = None,
        live: Liveness | None = None,
    ) -> tuple[Version, str, dict[str, np.ndarray]]:
        """Validate and run one request; returns `(version, signature name, outputs)`.

        `live` says whether the client still wants the answer: a request whose client has
        gone (or whose deadline has passed) by the time its turn comes is not run."""
        resolved = self.manager.resolve(model, version, label)
        sig_name, fn, _ = self.signature(resolved, signature_name)
        self.check_limits(inputs)
        self.check_inputs(sig_name, fn, inputs)
        outputs_spec = fn.structured_outputs
        unknown = sorted(set(output_filter or []) - set(outputs_spec))
        if unknown:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output tensor aliases {unknown} not found in signature '{sig_name}'; it has "
                f"{sorted(outputs_spec)}",
            )
        batchable = all(v.ndim >= 1 for v in inputs.values())
        if self.batching is not None and batchable:
            outputs = self._batched(model, resolved, sig_name, fn, inputs, live)
        else:
            outputs = self._run_when_free(fn, inputs, live)
        if output_filter:
            outputs = {k: v for k, v in outputs.items() if k in output_filter}
        return resolved, sig_name, outputs

    def run_examples(
        self,
        model: str,
        version: int | None,
        label: str | None,
        signature_name: str,
        examples: list[Any],
        method: str,
        live: Liveness | None = None,
    ) -> tuple[Version, str, dict[str, np.ndarray]]:
        """A Classify/Regress request: `tf.Example` protos through a signature that carries
        TF Serving's `method` name; returns `(version, signature name, outputs)`."""
        if not model:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "model_spec.name is empty")
        resolved = self.manager.resolve(model, version, label)
        sig_name, _, sig_def = self.signature(resolved, signature_name)
        check_method(sig_def, method)
        if not examples:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Input is empty")
        serialized = np.asarray([e.SerializeToString() for e in examples], dtype=object)
        input_key = next(iter(sig_def.inputs))
        return self.predict(
            model, resolved.number, None, sig_name, {input_key: serialized}, live=live
        )

    def _check_live(self, live: Liveness | None) -> None:
        gone = live() if live is not None else None
        if gone is not None:
            self.skipped += 1
            raise ServingError(*gone)

    def _run_when_free(self, fn, inputs, live: Liveness | None) -> dict[str, np.ndarray]:
        """Run once one of the `max_concurrent_runs` slots is free, unless the client stopped
        waiting meanwhile (then the work is skipped)."""
        while not self._slots.acquire(timeout=0.05):
            self._check_live(live)
        try:
            self._check_live(live)
            return self._run(fn, inputs)
        finally:
            self._slots.release()

    def _run(self, fn, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        self.runs += 1
        specs = fn.structured_input_signature[1]
        try:
            out = fn(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()})
        except tf.errors.OpError as e:
            raise ServingError(status_code(e.error_code), first_line(e.message)) from None
        return {k: v.numpy() for k, v in out.items()}

    def _batched(
        self, model, version: Version, sig_name, fn, inputs, live: Liveness | None = None
    ) -> dict[str, np.ndarray]:
        key = (model, version.number, sig_name)
        with self._lock:
            q = self._queues.get(key)
            if q is None:
                q = self._queues[key] = queue.Queue()
                for i in range(self.batching.num_batch_threads):
                    threading.Thread(
                        target=self._batch_worker,
                        args=(q, fn),
                        name=f"tfllm-batch-{sig_name}-{i}",
                        daemon=True,
                    ).start()
        rows = {int(v.shape[0]) for v in inputs.values()}
        if len(rows) != 1:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "batching needs every input to have the same size in dimension 0, got "
                f"{sorted(rows)}",
            )
        future: Future = Future()
        q.put(_Pending(inputs, rows.pop(), future, live))
        return future.result()

    def _batch_worker(self, q: queue.Queue, fn) -> None:
        timeout = self.batching.batch_timeout_micros / 1e6
        limit = self.batching.max_batch_size
        while not self._stop.is_set():
            try:
                first = q.get(timeout=0.5)
            except queue.Empty:
                continue
            if self._skip_if_gone(first):
                continue
            batch, rows = [first], first.rows
            while rows < limit:
                try:
                    nxt = q.get(timeout=timeout)
                except queue.Empty:
                    break
                if self._skip_if_gone(nxt):
                    continue
                if rows + nxt.rows > limit:
                    q.put(nxt)  # next batch
                    break
                batch.append(nxt)
                rows += nxt.rows
            self._run_batch(batch, fn)

    def _skip_if_gone(self, pending: _Pending) -> bool:
        gone = pending.gone()
        if gone is None:
            return False
        self.skipped += 1
        pending.future.set_exception(ServingError(*gone))
        return True

    def _run_batch(self, batch: list[_Pending], fn) -> None:
        if len(batch) == 1:
            self._settle(batch[0], fn)
            return
        try:
            merged = {
                k: np.concatenate([p.inputs[k] for p in batch], axis=0) for k in batch[0].inputs
            }
            outputs = self._run(fn, merged)
        except (ServingError, ValueError):
            # One bad request must not fail its neighbours: run each alone.
            for pending in batch:
                self._settle(pending, fn)
            return
        start = 0
        for pending in batch:
            end = start + pending.rows
            pending.future.set_result({k: v[start:end] for k, v in outputs.items()})
            start = end

    def _settle(self, pending: _Pending, fn) -> None:
        try:
            pending.future.set_result(self._run(fn, pending.inputs))
        except ServingError as e:
            pending.future.set_exception(e)
        except Exception as e:  # never leave a client waiting
            pending.future.set_exception(ServingError(grpc.StatusCode.INTERNAL, str(e)))

    def metadata(self, model: str, version: int | None, label: str | None) -> tuple[Version, Any]:
        """`(version, SignatureDefMap)` for GetModelMetadata."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        resolved = self.manager.resolve(model, version, label)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, sig in resolved.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(sig)
        return resolved, signature_map


def declared_elements(tensor_proto) -> int:
    """The element count a TensorProto's shape declares (its dims multiplied), read before
    anything is allocated; INVALID_ARGUMENT for a negative dim or an unknown rank."""
    shape = tensor_proto.tensor_shape
    if shape.unknown_rank:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "malformed tensor: unknown rank")
    count = 1
    for dim in shape.dim:
        if dim.size < 0:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT, f"malformed tensor: dimension {dim.size}"
            )
        count *= dim.size
    return count


def as_numpy(tensor_proto, max_elements: int | None = None) -> np.ndarray:
    """A request's TensorProto as numpy, or INVALID_ARGUMENT when it is malformed or declares
    more than `max_elements` elements (checked before allocating: TensorFlow fills a declared
    shape from a single value, so a few bytes can ask for gigabytes)."""
    elements = declared_elements(tensor_proto)
    if max_elements is not None and elements > max_elements:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the tensor's shape declares {elements} elements; the limit is {max_elements}",
        )
    import tensorflow as tf

    try:
        return tf.make_ndarray(tensor_proto)
    except Exception as e:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"malformed tensor: {e}") from None
