"""Running a signature for a request: validation as TF Serving does it, and server-side batching."""

from __future__ import annotations

import logging
import queue
import re
import threading
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


class Predictor:
    """Validates requests against SignatureDefs and runs them, batching concurrent ones.

    Args:
        manager: the loaded models.
        batching: batch concurrent requests to the same signature (None: run each alone).
    """

    def __init__(self, manager: ServableManager, batching: BatchingConfig | None = None):
        self.manager = manager
        self.batching = batching
        self._queues: dict[tuple, queue.Queue] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

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
    ) -> tuple[Version, str, dict[str, np.ndarray]]:
        """Validate and run one request; returns `(version, signature name, outputs)`."""
        resolved = self.manager.resolve(model, version, label)
        sig_name, fn, _ = self.signature(resolved, signature_name)
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
            outputs = self._batched(model, resolved, sig_name, fn, inputs)
        else:
            outputs = self._run(fn, inputs)
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
        return self.predict(model, resolved.number, None, sig_name, {input_key: serialized})

    @staticmethod
    def _run(fn, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        specs = fn.structured_input_signature[1]
        try:
            out = fn(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()})
        except tf.errors.OpError as e:
            raise ServingError(status_code(e.error_code), first_line(e.message)) from None
        return {k: v.numpy() for k, v in out.items()}

    def _batched(self, model, version: Version, sig_name, fn, inputs) -> dict[str, np.ndarray]:
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
        q.put(_Pending(inputs, rows.pop(), future))
        return future.result()

    def _batch_worker(self, q: queue.Queue, fn) -> None:
        timeout = self.batching.batch_timeout_micros / 1e6
        limit = self.batching.max_batch_size
        while not self._stop.is_set():
            try:
                first = q.get(timeout=0.5)
            except queue.Empty:
                continue
            batch, rows = [first], first.rows
            while rows < limit:
                try:
                    nxt = q.get(timeout=timeout)
                except queue.Empty:
                    break
                if rows + nxt.rows > limit:
                    q.put(nxt)  # next batch
                    break
                batch.append(nxt)
                rows += nxt.rows
            self._run_batch(batch, fn)

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


def as_numpy(tensor_proto) -> np.ndarray:
    """A request's TensorProto as numpy, or INVALID_ARGUMENT when it is malformed."""
    import tensorflow as tf

    try:
        return tf.make_ndarray(tensor_proto)
    except Exception as e:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"malformed tensor: {e}") from None
