"""Checks on an export, in a fresh process that has only TensorFlow and tensorflow-text: the
environment of the standard model server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

VALIDATION_PROMPTS = ("Hello", "The quick brown fox", "Once upon a time,")


class ExportValidationError(RuntimeError):
    """The reloaded export disagrees with the Keras model, or uses ops TF Serving lacks."""


# Runs in the fresh process, which skips Keras's optional imports as a `tfllm` command does
# (tfllm/lean_imports.py is run by path: the process never imports tfllm). Ops are classified
# against the op registry before and after importing tensorflow_text: what TF core registers,
# what tf-text adds, and anything else.
# It starts before the export is written (`FreshProcess`): TensorFlow's import overlaps the
# tracing and saving, and the path and requests arrive on stdin once the SavedModel is complete.
_CHILD = r"""
import json, runpy, sys
runpy.run_path(sys.argv[1])["install"]()
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

order = sys.stdin.readline()
if not order:
    sys.exit(0)  # the export stopped before it had anything to validate
order = json.loads(order)
path, requests = order["path"], order["requests"]
proto = saved_model_pb2.SavedModel()
with open(path + "/saved_model.pb", "rb") as f:
    proto.ParseFromString(f.read())
ops = set()
for graph in proto.meta_graphs:
    ops.update(n.op for n in graph.graph_def.node)
    for fn in graph.graph_def.library.function:
        ops.update(n.op for n in fn.node_def)
functions = {fn.signature.name for g in proto.meta_graphs for fn in g.graph_def.library.function}
ops -= functions
core = sorted(o for o in ops if op_def_registry.get(o) is not None)
import tensorflow_text  # noqa: F401  (registers tf-text's ops, as TF Serving's build links them)
text = sorted(o for o in ops if o not in core and op_def_registry.get(o) is not None)
other = sorted(ops - set(core) - set(text))
loaded = tf.saved_model.load(path)
results = {}
def value(v, dtype):
    if dtype == "bytes":  # binary strings (serialized protos) travel as latin-1 text
        return tf.constant([s.encode("latin-1") for s in v], tf.string)
    return tf.constant(v, dtype=dtype)
def plain(v):
    if v.dtype != tf.string:
        return v.numpy().tolist()
    return [plain_string(s) for s in v.numpy().tolist()]
def plain_string(s):
    return [plain_string(x) for x in s] if isinstance(s, list) else s.decode("utf-8")
# Replay the warmup records first, as TF Serving does at load: each must succeed.
warmup, replayed = path + "/assets.extra/tf_serving_warmup_requests", 0
if tf.io.gfile.exists(warmup):
    from tensorflow_serving.apis import prediction_log_pb2
    for record in tf.data.TFRecordDataset(warmup):
        entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if entry.WhichOneof("log_type") != "predict_log":
            sys.exit(f"warmup record {replayed}: only predict_log records are written")
        request = entry.predict_log.request
        name = request.model_spec.signature_name or "serving_default"
        try:
            loaded.signatures[name](**{k: tf.make_ndarray(v) for k, v in request.inputs.items()})
        except Exception as e:
            sys.exit(f"warmup record {replayed} ({name}) fails: {str(e).splitlines()[0]}")
        replayed += 1
for name, inputs in requests.items():
    fn = loaded.signatures[name]
    out = fn(**{k: value(*v) for k, v in inputs.items()})
    results[name] = {k: plain(v) for k, v in out.items()}
imported = sorted(m for m in ("tfllm", "keras_hub") if m in sys.modules)
print("@@RESULT@@" + json.dumps({"core": core, "text": text, "other": other,
                                 "results": results, "imported": imported,
                                 "warmup_records": replayed}))
sys.stdout.flush()
import os
os._exit(0)  # done: the interpreter's teardown after TensorFlow costs seconds (fast_exit.py)
"""


class FreshProcess:
    """A new Python that imports only tensorflow and tensorflow_text, started ahead of the
    export it will check: it imports TensorFlow while the export is traced and saved, then
    waits for `run`. Started in `cwd` (a folder without Python packages of the user's).

    Example:

    >>> process = FreshProcess()
    >>> process.close()  # the export failed before validation: the process ends unused
    >>> process.proc.poll() is not None
    True
    """

    def __init__(self, cwd: str | None = None) -> None:
        from tfllm import lean_imports

        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, lean_imports.__file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
            cwd=cwd,
        )

    def run(self, path: str, requests: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Load the SavedModel at `path`, run `requests` (`{signature: {input: (value,
        dtype)}}`) and list its ops; the process ends after."""
        order = json.dumps({"path": os.path.abspath(path), "requests": requests})
        stdout, stderr = self.proc.communicate(order + "\n")
        marker = [line for line in stdout.splitlines() if line.startswith("@@RESULT@@")]
        if self.proc.returncode != 0 or not marker:
            raise ExportValidationError(
                f"the export failed to load or run in a fresh process:\n{stderr[-3000:]}"
            )
        return json.loads(marker[0][len("@@RESULT@@") :])

    def close(self) -> None:
        """End the process if `run` never did (its stdin closes: it exits unused)."""
        if self.proc.poll() is None:
            self.proc.communicate("")


def run_in_fresh_process(path: str, requests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Load the SavedModel at `path` in a new Python that imports only tensorflow and
    tensorflow_text, run `requests` (`{signature: {input: (value, dtype)}}`) and list ops."""
    return FreshProcess(cwd=os.path.dirname(os.path.abspath(path))).run(path, requests)


def validate_export(path: str, module, process: FreshProcess | None = None) -> dict[str, Any]:
    """Reload the export in a fresh process, replay its warmup records as TF Serving does at
    load, run the module's validation requests (for a generator, `serving_default` exactly as a
    client calls it, too), compare the answers with the Keras model
    (`module.check_validation`), and check its ops. `process`: a `FreshProcess` started
    earlier (a new one otherwise).

    Returns:
        A report: op counts by origin and what was compared.
    """
    texts = list(VALIDATION_PROMPTS)
    try:
        requests = module.validation_requests(texts)
        if process is None:
            report = run_in_fresh_process(path, requests)
        else:
            report = process.run(path, requests)
        compared = module.check_validation(texts, report["results"])
    except ValueError as e:
        raise ExportValidationError(str(e)) from None
    if report["other"]:
        raise ExportValidationError(
            f"the export uses ops outside TensorFlow core and tf-text: {report['other']}"
        )
    if report["imported"]:
        raise ExportValidationError(f"loading the export imported {report['imported']}")
    return {
        "core_ops": len(report["core"]),
        "text_ops": report["text"],
        "compared": compared,
        "warmup_records": report["warmup_records"],
    }


def describe(path: str) -> str:
    """`saved_model_cli show --all` for exports with tf-text ops: every signature's inputs and
    outputs."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the stock saved_model_cli lacks these ops)

    loaded = tf.saved_model.load(path)
    lines = [f"SavedModel: {path}"]
    for name, fn in sorted(loaded.signatures.items()):
        lines.append(f"signature '{name}':")
        for key, spec in sorted(fn.structured_input_signature[1].items()):
            lines.append(f"  input  {key}: {spec.dtype.name} {spec.shape}")
        for key, spec in sorted(fn.structured_outputs.items()):
            lines.append(f"  output {key}: {spec.dtype.name} {spec.shape}")
    return "\n".join(lines)


def run_signature(path: str, signature: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Call one signature (like `saved_model_cli run --input_exprs`), tf-text ops loaded."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    loaded = tf.saved_model.load(path)
    if signature not in loaded.signatures:
        raise KeyError(
            f"signature '{signature}' not found; the export has {sorted(loaded.signatures)}"
        )
    fn = loaded.signatures[signature]
    specs = fn.structured_input_signature[1]
    missing = sorted(set(specs) - set(inputs))
    if missing:
        raise ValueError(f"missing inputs {missing} for signature '{signature}'")
    unknown = sorted(set(inputs) - set(specs))
    if unknown:
        raise ValueError(f"signature '{signature}' has no inputs {unknown}")
    out = fn(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()})
    return {k: _plain(v) for k, v in out.items()}


def _plain(tensor) -> Any:
    """A signature output as JSON-ready lists, strings decoded at any rank."""
    import numpy as np

    values = tensor.numpy()
    if tensor.dtype.name != "string":
        return values.tolist()
    decode = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])
    return decode(values).tolist() if values.size else values.tolist()
