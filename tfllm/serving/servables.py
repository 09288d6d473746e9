"""Model versions on disk, loaded by version policy and kept in step with the disk by polling."""

from __future__ import annotations

import concurrent.futures
import ctypes
import gc
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import grpc

log = logging.getLogger(__name__)

# TF Serving's ModelVersionStatus states.
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


class ServingError(Exception):
    """A request that fails with a gRPC status code (and the matching REST status)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def status_code(number: int) -> grpc.StatusCode:
    """The gRPC status code of a TensorFlow error code (they share numbering)."""
    return _CODES.get(int(number), grpc.StatusCode.UNKNOWN)


@dataclass
class ModelConfig:
    """One entry of TF Serving's `model_config_list`.

    Attributes:
        name: the model name clients ask for.
        base_path: the folder holding numbered version folders.
        policy: `latest` (the newest `num_versions`), `all`, or `specific`.
        num_versions: for `latest`.
        versions: for `specific`.
        labels: version labels (`stable` -> 3).
    """

    name: str
    base_path: str
    policy: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()
    labels: dict[str, int] = field(default_factory=dict)

    def wanted(self, on_disk: list[int]) -> list[int]:
        on_disk = sorted(on_disk)
        if self.policy == "all":
            return on_disk
        if self.policy == "specific":
            return [v for v in on_disk if v in self.versions]
        return on_disk[-self.num_versions :] if self.num_versions > 0 else []


def parse_model_config_file(path: str) -> list[ModelConfig]:
    """Read TF Serving's `--model_config_file` (a text-format `ModelServerConfig`)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    with open(path, encoding="utf-8") as f:
        text = f.read()
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise ValueError(f"model_config_file: {path}: {e}") from None
    models = []
    base = os.path.dirname(os.path.abspath(path))
    for m in config.model_config_list.config:
        if not m.name or not m.base_path:
            raise ValueError(f"model_config_file: {path}: every model needs name and base_path")
        policy = m.model_version_policy.WhichOneof("policy_choice") or "latest"
        models.append(
            ModelConfig(
                name=m.name,
                base_path=os.path.join(base, m.base_path),
                policy=policy,
                num_versions=m.model_version_policy.latest.num_versions or 1,
                versions=tuple(m.model_version_policy.specific.versions),
                labels=dict(m.version_labels),
            )
        )
    if not models:
        raise ValueError(f"model_config_file: {path} lists no models")
    return models


@dataclass
class Version:
    """One loaded (or failed) version."""

    number: int
    state: str = START
    error: str = ""
    loaded: Any = None
    signature_defs: dict[str, Any] = field(default_factory=dict)
    files: tuple = ()  # the files' (size, mtime) when it was loaded: a failed load is retried
    # only once they change

    @property
    def failed(self) -> bool:
        return self.state == END and bool(self.error)


def files_stamp(path: str) -> tuple:
    """`(size, mtime)` of a version folder's graph and variable files: what changes when the
    folder is replaced or fixed."""
    stamp = []
    for name in ("saved_model.pb", os.path.join("variables", "variables.index")):
        try:
            info = os.stat(os.path.join(path, name))
            stamp.append((name, info.st_size, info.st_mtime_ns))
        except OSError:
            stamp.append((name, None, None))
    return tuple(stamp)


def read_signature_defs(path: str) -> dict[str, Any]:
    """The SignatureDef protos of a SavedModel (what GetModelMetadata reports)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    defs = dict(proto.meta_graphs[0].signature_def)
    defs.pop("__saved_model_init_op", None)
    return defs


WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def release_memory() -> None:
    """Give the memory of an unloaded (or failed) version back: collect its reference cycles
    (a loaded SavedModel holds many), then ask glibc to return freed pages to the system, which
    it otherwise keeps in its arenas (TF Serving links tcmalloc for the same reason)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass  # not glibc


def replay_warmup(
    loaded: Any, path: str, threads: int = 2, signatures: Collection[str] | None = None
) -> int:
    """Run the export's warmup records (PredictionLogs of Predict requests) against its
    signatures before the version takes traffic, as TF Serving does with
    `--enable_model_warmup`: the first real request then finds its graphs initialized.
    Records run on `threads` threads at once (TF Serving's `num_model_warmup_threads`): a
    signature's first call spends most of its time optimizing its graph, on one core.
    With `signatures`, only the records of those run. Returns how many ran.

    Raises:
        ValueError: a record is not a Predict request or names no signature of the model.
        tf.errors.OpError: a record fails (the version does not load, as in TF Serving).
    """
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    records = os.path.join(path, WARMUP_FILE)
    if not os.path.exists(records):
        return 0
    calls = []
    for count, record in enumerate(tf.data.TFRecordDataset(records)):
        entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if entry.WhichOneof("log_type") != "predict_log":
            raise ValueError(f"warmup record {count}: only Predict requests are replayed")
        request = entry.predict_log.request
        name = request.model_spec.signature_name or "serving_default"
        if name not in loaded.signatures:
            raise ValueError(f"warmup record {count}: no signature '{name}'")
        if signatures is not None and name not in signatures:
            continue
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        calls.append((loaded.signatures[name], inputs))
    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
        for done in [pool.submit(fn, **inputs) for fn, inputs in calls]:
            done.result()  # the first failure, in the records' order
    return len(calls)


class ServableManager:
    """Loads the versions each model's policy wants, polls for changes, answers look-ups.

    Args:
        models: what to serve.
        poll_seconds: how often to rescan the base paths (0: scan once, at start).
    """

    def __init__(self, models: list[ModelConfig], poll_seconds: float = 1.0):
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        self.models = {m.name: m for m in models}
        self.versions: dict[str, dict[int, Version]] = {m.name: {} for m in models}
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ----- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self.scan()
        if self.poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll, name="tfllm-poll", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.scan()
            except Exception:  # a bad folder must not stop serving the others
                log.exception("polling for model versions failed")

    def scan(self) -> None:
        """Bring each model to what its policy wants, availability first: versions are loaded
        (and warmed) before any is unloaded; a version that fails to load stays reported (END,
        with its error) and is left out of the policy, so the newest healthy versions keep
        serving; it is tried again once its files change, and forgotten once its folder goes."""
        for name, config in self.models.items():
            on_disk = {}
            if os.path.isdir(config.base_path):
                on_disk = {
                    int(d): os.path.join(config.base_path, d)
                    for d in os.listdir(config.base_path)
                    if re.fullmatch(r"\d+", d)
                    and os.path.exists(os.path.join(config.base_path, d, "saved_model.pb"))
                }
            with self._lock:
                for number, version in list(self.versions[name].items()):
                    gone = number not in on_disk
                    if version.failed and (gone or files_stamp(on_disk[number]) != version.files):
                        del self.versions[name][number]  # removed, or fixed: forget the failure
            for _ in range(len(on_disk) + 1):  # until no wanted version is left to load
                healthy = [n for n in on_disk if not self._failed(name, n)]
                wanted = set(config.wanted(healthy))
                pending = [n for n in sorted(wanted) if self._needs_load(name, n)]
                if not pending:
                    break
                for number in pending:
                    self._load(name, number)
            unloaded = False
            for number, version in list(self.versions[name].items()):
                if number not in wanted and version.state == AVAILABLE:
                    with self._lock:
                        version.state = UNLOADING
                        version.loaded = None
                        version.state = END
                    log.info("unloaded %s version %d", name, number)
                    unloaded = True
            if unloaded:
                release_memory()

    def _failed(self, name: str, number: int) -> bool:
        version = self.versions[name].get(number)
        return version is not None and version.failed

    def _needs_load(self, name: str, number: int) -> bool:
        version = self.versions[name].get(number)
        return version is None or (version.state == END and not version.error)

    def _load(self, name: str, number: int) -> None:
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (exports tokenize with tf-text ops)

        path = os.path.join(self.models[name].base_path, str(number))
        version = Version(number, state=LOADING, files=files_stamp(path))
        with self._lock:
            self.versions[name][number] = version
        try:
            loaded = tf.saved_model.load(path)
            defs = read_signature_defs(path)
            replayed = replay_warmup(loaded, path)
        except Exception as e:
            with self._lock:
                version.state, version.error = END, f"{type(e).__name__}: {e}"
            log.error("could not load %s version %d: %s", name, number, e)
            release_memory()
            return
        with self._lock:
            version.loaded, version.signature_defs, version.state = loaded, defs, AVAILABLE
        log.info("loaded %s version %d (%d warmup requests replayed)", name, number, replayed)

    # ----- look-ups ---------------------------------------------------------------------------
    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Version:
        """The version a request names (the newest available if it names none).

        Raises:
            ServingError: NOT_FOUND for an unknown model, version or label;
                UNAVAILABLE while a wanted version is still loading.
        """
        if name not in self.models:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})"
            )
        if label:
            version = self._labelled(name, label)
        with self._lock:
            versions = self.versions[name]
            if version is not None:
                found = versions.get(int(version))
                if found is None or found.state != AVAILABLE:
                    raise ServingError(
                        grpc.StatusCode.NOT_FOUND,
                        f"Servable not found for request: Specific({name}, {version})",
                    )
                return found
            available = [v for n, v in sorted(versions.items()) if v.state == AVAILABLE]
        if not available:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})"
            )
        return available[-1]

    def _labelled(self, name: str, label: str) -> int:
        """The version number `label` names for model `name` (INVALID_ARGUMENT if none)."""
        if label not in self.models[name].labels:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}"
            )
        return self.models[name].labels[label]

    def statuses(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[Version]:
        """Every version of `name` with its state, or the one `version` or `label` names.

        Raises:
            ServingError: NOT_FOUND for an unknown model or version; INVALID_ARGUMENT for an
                unknown label (as `resolve`).
        """
        if name not in self.models:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}"
            )
        if label:
            version = self._labelled(name, label)
        with self._lock:
            versions = [v for n, v in sorted(self.versions[name].items())]
        if version is not None:
            versions = [v for v in versions if v.number == int(version)]
            if not versions:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Could not find version {version} of model {name}",
                )
        return versions

    def wait_until_available(self, name: str, timeout: float = 120.0) -> Version:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.resolve(name)
            except ServingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
