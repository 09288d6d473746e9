"""Serving under faults: a bounded load while versions change and malformed requests arrive.

    pip install -e .
    python benchmarks/serving_faults.py [--clients 16] [--steady 20]

What it does, against `tfllm serve` of a small export (the embedded default's shape, trained
40 steps here) in its own process on 127.0.0.1:

1. `--clients` threads (half gRPC, half REST) send good generate requests without pause for the
   whole run, each recording its latency and status;
2. phases: steady; `tfllm export` writes version 2 into the served folder (the server loads,
   warms and switches to it); steady; a corrupt version 3 (a copy of 2 with `saved_model.pb`
   truncated) is dropped in; it is removed; steady;
3. meanwhile a corpus of malformed requests (over 100, both transports) is sent, each with the
   status TF Serving's semantics call for.

It prints (and writes to benchmarks/results/serving_faults.{md,json}) the requests sent, the
good requests that failed (by code), p50/p99 latency per phase, the malformed cases answered
with the wrong code, and the server's RSS before and after. Targets (issue 21): no failed good
request, p99 during a version switch <= 2x the steady p99, every malformed case answered with
its code, RSS growth <= 10%. Run it alone: other work on the machine skews latencies.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [HERE]
from results_file import save_results  # noqa: E402

TFLLM = [sys.executable, "-m", "tfllm.cli"]
CORPUS = (
    "BERNARDO:\nWho's there?\n\nFRANCISCO:\nNay, answer me: stand, and unfold yourself.\n\n"
    "BERNARDO:\nLong live the king!\n\nFRANCISCO:\nBernardo?\n\nBERNARDO:\nHe.\n\n"
) * 40
MODEL = "lm"


def run(args: list[str], cwd: str) -> str:
    proc = subprocess.run(TFLLM + args, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"tfllm {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(next(x for x in f if x.startswith("VmRSS:")).split()[1]) / 1024


# ----- the load -------------------------------------------------------------------------------
class Load:
    """Client threads sending good requests until stopped; every answer is logged with the
    phase it was sent in."""

    def __init__(self, clients: int, grpc_port: int, rest_port: int):
        import grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        from tfllm.serving.protos import tensor_proto as make_tensor_proto

        self.phase = "warm"
        self.records: list[tuple[str, str, float, str]] = []  # phase, transport, secs, code
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = []
        for i in range(clients):
            transport = "grpc" if i % 2 == 0 else "rest"
            self.threads.append(threading.Thread(target=self._loop, args=(transport,)))
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        request.inputs["prompts"].CopyFrom(make_tensor_proto(["BERNARDO:"]))
        self._request = request
        self._url = f"http://127.0.0.1:{rest_port}/v1/models/{MODEL}:predict"
        self._grpc = grpc

    def _one(self, transport: str) -> str:
        if transport == "grpc":
            try:
                self._stub.Predict(self._request, timeout=60)
                return "OK"
            except self._grpc.RpcError as e:
                return e.code().name
        body = json.dumps({"instances": ["BERNARDO:"]}).encode()
        try:
            with urllib.request.urlopen(urllib.request.Request(self._url, body), timeout=60) as r:
                r.read()
                return "OK"
        except urllib.error.HTTPError as e:
            return f"HTTP {e.code}"
        except OSError as e:
            return type(e).__name__

    def _loop(self, transport: str) -> None:
        while not self._stop.is_set():
            phase, start = self.phase, time.perf_counter()
            code = self._one(transport)
            with self._lock:
                self.records.append((phase, transport, time.perf_counter() - start, code))

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self.threads:
            t.join()


# ----- the malformed corpus -------------------------------------------------------------------
def rest_cases() -> list[tuple[str, bytes, dict[str, str], str, int]]:
    """(name, body, headers, path, expected HTTP status)."""
    predict = f"/v1/models/{MODEL}:predict"
    cases: list[tuple[str, bytes, dict[str, str], str, int]] = []

    def add(name: str, body: str | bytes, status: int, path: str = predict, headers=None):
        data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
        cases.append((name, data, headers or {"Content-Length": str(len(data))}, path, status))

    for text in ["{", "[", "null", "1", '"x"', "[]", "{}", "tru", '{"instances": }']:
        add(f"not a request: {text}", text, 400)
    add("invalid UTF-8", b'{"instances": ["\xff\xfe"]}', 400)
    add("a lone surrogate", '{"instances": ["\\ud800"]}', 400)
    add("100k-deep JSON", "[" * 100_000 + "]" * 100_000, 400)
    for rows in ['""', "[]", "[1]", "[null]", '[["a"]]', "[true]", '[{"b64": "@@@"}]']:
        add(f"instances {rows}", f'{{"instances": {rows}}}', 400)
    add("both instances and inputs", '{"instances": ["a"], "inputs": ["a"]}', 400)
    add("signature_name a list", '{"signature_name": ["x"], "instances": ["a"]}', 400)
    add("signature_name a number", '{"signature_name": 1, "instances": ["a"]}', 400)
    add("unknown signature", '{"signature_name": "nope", "instances": ["a"]}', 400)
    add("unknown input", '{"inputs": {"prompt": ["a"]}}', 400)
    generate = {
        "prompts": ["a"],
        "max_new_tokens": 2,
        "temperature": 0.0,
        "top_k": 0,
        "top_p": 1.0,
        "seed": 0,
    }
    for key in ("max_new_tokens", "top_k", "seed"):
        for bad in ["3.7", str(2**40), "1e400", '"5"', "null", "[1, 2]", "-2147483649"]:
            body = json.dumps({"signature_name": "generate", "inputs": {**generate, key: 0}})
            add(f"generate {key}={bad}", body.replace(f'"{key}": 0', f'"{key}": {bad}'), 400)
    for key in ("temperature", "top_p"):
        for bad in ["NaN", "Infinity", "-Infinity", '"x"', "null", "1e400"]:
            body = json.dumps({"signature_name": "generate", "inputs": {**generate, key: 0.5}})
            add(f"generate {key}={bad}", body.replace(f'"{key}": 0.5', f'"{key}": {bad}'), 400)
    missing = {k: v for k, v in generate.items() if k != "seed"}
    add("generate without seed", json.dumps({"signature_name": "generate", "inputs": missing}), 400)
    add("Content-Length abc", "{}", 400, headers={"Content-Length": "abc"})
    add("Content-Length -1", "{}", 400, headers={"Content-Length": "-1"})
    add("Content-Length 10 GB", "", 429, headers={"Content-Length": str(10**10)})
    add("unknown model", '{"instances": ["a"]}', 404, path="/v1/models/nope:predict")
    add(
        "unknown version",
        '{"instances": ["a"]}',
        404,
        path=f"/v1/models/{MODEL}/versions/9:predict",
    )
    add("unknown label", '{"instances": ["a"]}', 400, path=f"/v1/models/{MODEL}/labels/x:predict")
    add("bad path", '{"instances": ["a"]}', 404, path="/v2/models/x")
    add("POST to metadata", "{}", 400, path=f"/v1/models/{MODEL}/metadata")
    add(
        "classify on a generator",
        '{"examples": [{"x": 1}]}',
        400,
        path=f"/v1/models/{MODEL}:classify",
    )
    add("regress without examples", '{"examples": 1}', 400, path=f"/v1/models/{MODEL}:regress")
    b64 = base64.b64encode(b"BERNARDO:").decode()
    add("b64 as a number", '{"instances": [{"b64": 5}]}', 400)
    add("b64 with extra key", f'{{"instances": [{{"b64": "{b64}", "x": 1}}]}}', 400)
    return cases


def grpc_cases():
    """(name, callable(stubs) -> None, expected gRPC code name)."""
    import numpy as np
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        get_model_status_pb2,
        inference_pb2,
        predict_pb2,
    )

    from tfllm.serving.protos import tensor_proto as make_tensor_proto

    def request(inputs, model=MODEL, signature="", version=None, label=None, output_filter=()):
        r = predict_pb2.PredictRequest()
        r.model_spec.name = model
        r.model_spec.signature_name = signature
        if version is not None:
            r.model_spec.version.value = version
        if label is not None:
            r.model_spec.version_label = label
        for k, v in inputs.items():
            r.inputs[k].CopyFrom(
                v if isinstance(v, tensor_pb2.TensorProto) else make_tensor_proto(v)
            )
        r.output_filter.extend(output_filter)
        return r

    def raw(dtype, shape, **fields):
        p = tensor_pb2.TensorProto(dtype=getattr(types_pb2, dtype))
        p.tensor_shape.CopyFrom(
            tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in shape]
            )
        )
        for key, value in fields.items():
            if key == "tensor_content":
                p.tensor_content = value
            else:
                getattr(p, key).extend(value)
        return p

    good = {
        "prompts": np.array([b"a"], dtype=object),
        "max_new_tokens": np.int32(2),
        "temperature": np.float32(0.0),
        "top_k": np.int32(0),
        "top_p": np.float32(1.0),
        "seed": np.int32(0),
    }
    prompts = {"prompts": np.array([b"BERNARDO:"], dtype=object)}
    cases = []

    def predict_case(name, code, req):
        cases.append((name, lambda s, r=req: s["predict"].Predict(r, timeout=60), code))

    predict_case("empty model name", "INVALID_ARGUMENT", request(prompts, model=""))
    predict_case("unknown model", "NOT_FOUND", request(prompts, model="nope"))
    predict_case("unknown version", "NOT_FOUND", request(prompts, version=9))
    predict_case("unknown label", "INVALID_ARGUMENT", request(prompts, label="x"))
    predict_case("unknown signature", "INVALID_ARGUMENT", request(prompts, signature="nope"))
    predict_case("no inputs", "INVALID_ARGUMENT", request({}))
    predict_case("extra input", "INVALID_ARGUMENT", request({**prompts, "x": np.int32(1)}))
    predict_case("int prompts", "INVALID_ARGUMENT", request({"prompts": np.array([1], np.int32)}))
    predict_case("rank-2 prompts", "INVALID_ARGUMENT", request({"prompts": np.array([[b"a"]])}))
    predict_case("scalar prompts", "INVALID_ARGUMENT", request({"prompts": np.array(b"a")}))
    predict_case("unknown output", "INVALID_ARGUMENT", request(prompts, output_filter=["x"]))
    for dtype, field in (("DT_STRING", "string_val"), ("DT_INT32", "int_val")):
        for shape in ([2**28], [2**16, 2**16], [2**40]):
            value = [b"a"] if field == "string_val" else [1]
            signature = "" if dtype == "DT_STRING" else "score_tokens"
            key = "prompts" if dtype == "DT_STRING" else "lengths"
            predict_case(
                f"{dtype} declaring {shape}",
                "INVALID_ARGUMENT",
                request({key: raw(dtype, shape, **{field: value})}, signature=signature),
            )
    predict_case("negative dim", "INVALID_ARGUMENT", request({"prompts": raw("DT_STRING", [-1])}))
    predict_case(
        "content shorter than shape",
        "INVALID_ARGUMENT",
        request(
            {"lengths": raw("DT_INT32", [4], tensor_content=b"\0" * 5)}, signature="score_tokens"
        ),
    )
    for key, values in (
        ("temperature", [np.float32("nan"), np.float32("inf"), np.float32("-inf")]),
        ("top_p", [np.float32("nan"), np.float32("inf")]),
        ("max_new_tokens", [np.int32(-5)]),
        ("top_k", [np.int32(-1)]),
    ):
        for value in values:
            predict_case(
                f"generate {key}={value}",
                "INVALID_ARGUMENT",
                request({**good, key: value}, signature="generate"),
            )
    for key in good:
        if key != "prompts":
            wrong = {**good, key: np.array([1, 2], dtype=good[key].dtype)}
            predict_case(
                f"generate {key} as a vector",
                "INVALID_ARGUMENT",
                request(wrong, signature="generate"),
            )
            wrong = {
                **good,
                key: np.array(
                    1.5 if good[key].dtype.kind == "i" else 1,
                    dtype="float64" if good[key].dtype.kind == "i" else "int64",
                ),
            }
            predict_case(
                f"generate {key} of the wrong type",
                "INVALID_ARGUMENT",
                request(wrong, signature="generate"),
            )

    metadata = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata.model_spec.name = MODEL
    metadata.metadata_field.append("nope")
    cases.append(
        (
            "metadata field",
            lambda s: s["predict"].GetModelMetadata(metadata, timeout=60),
            "INVALID_ARGUMENT",
        )
    )
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = MODEL
    classify.input.example_list.examples.add()
    cases.append(
        (
            "classify a generator",
            lambda s: s["predict"].Classify(classify, timeout=60),
            "INVALID_ARGUMENT",
        )
    )
    multi = inference_pb2.MultiInferenceRequest()
    cases.append(
        (
            "MultiInference",
            lambda s: s["predict"].MultiInference(multi, timeout=60),
            "UNIMPLEMENTED",
        )
    )
    for name, spec, code in (
        ("status of an unknown model", {"name": "nope"}, "NOT_FOUND"),
        ("status of an unknown version", {"name": MODEL, "version": 9}, "NOT_FOUND"),
        ("status of an unknown label", {"name": MODEL, "label": "x"}, "INVALID_ARGUMENT"),
    ):
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = spec["name"]
        if "version" in spec:
            status.model_spec.version.value = spec["version"]
        if "label" in spec:
            status.model_spec.version_label = spec["label"]
        cases.append((name, lambda s, r=status: s["model"].GetModelStatus(r, timeout=60), code))
    return cases


def send_malformed(grpc_port: int, rest_port: int) -> list[dict]:
    import http.client

    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    results = []
    for name, body, headers, path, expected in rest_cases():
        connection = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=60)
        try:
            connection.putrequest("POST", path)
            for k, v in headers.items():
                connection.putheader(k, v)
            connection.endheaders()
            connection.send(body)
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
            got = response.status
            leaked = "Traceback" in text or re.search(r"\b\w+Error\b", text) is not None
        except OSError as e:
            got, leaked = type(e).__name__, False
        finally:
            connection.close()
        results.append(
            {"transport": "rest", "case": name, "expected": expected, "got": got, "leaked": leaked}
        )
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    stubs = {
        "predict": prediction_service_pb2_grpc.PredictionServiceStub(channel),
        "model": model_service_pb2_grpc.ModelServiceStub(channel),
    }
    for name, call, expected in grpc_cases():
        try:
            call(stubs)
            got, leaked = "OK", False
        except grpc.RpcError as e:
            got = e.code().name
            leaked = "Traceback" in (e.details() or "")
        results.append(
            {"transport": "grpc", "case": name, "expected": expected, "got": got, "leaked": leaked}
        )
    channel.close()
    return results


# ----- the run --------------------------------------------------------------------------------
def wait_for(check, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise TimeoutError(what)


def available_versions(rest_port: int) -> list[int]:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{rest_port}/v1/models/{MODEL}", timeout=10
        ) as r:
            states = json.loads(r.read())["model_version_status"]
    except OSError:
        return []
    return sorted(int(s["version"]) for s in states if s["state"] == "AVAILABLE")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--steady", type=float, default=20.0, help="seconds of each steady phase")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="tfllm-faults-")
    corpus = os.path.join(work, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(CORPUS)
    run_dir, base = os.path.join(work, "run"), os.path.join(work, "models", MODEL)
    print("training and exporting version 1 ...", flush=True)
    run(
        [
            "train",
            f"data.path={corpus}",
            f"run_dir={run_dir}",
            "trainer.max_steps=40",
            "trainer.callbacks=[]",
        ],
        work,
    )
    export = [
        "export",
        f"ckpt={run_dir}",
        f"export.base_path={os.path.dirname(base)}",
        f"export.name={MODEL}",
        "export.max_new_tokens=8",
    ]
    run([*export, "export.version=1"], work)

    server = subprocess.Popen(
        [
            *TFLLM,
            "serve",
            f"model_base_path={base}",
            f"model_name={MODEL}",
            "port=0",
            "rest_port=0",
            "file_system_poll_wait_seconds=0.5",
        ],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ports = None
    for line in server.stdout:
        match = re.search(r"serving gRPC on 127\.0\.0\.1:(\d+), REST on 127\.0\.0\.1:(\d+)", line)
        if match:
            ports = int(match[1]), int(match[2])
            break
    if ports is None:
        raise RuntimeError(f"tfllm serve did not start:\n{server.stderr.read()[-3000:]}")
    threading.Thread(target=server.stdout.read, daemon=True).start()
    threading.Thread(target=server.stderr.read, daemon=True).start()

    load = Load(args.clients, *ports)
    load.start()
    time.sleep(5)
    rss_start = rss_mb(server.pid)
    phases: list[tuple[str, float]] = []
    malformed: list[dict] = []

    def phase(name: str) -> None:
        load.phase = name
        phases.append((name, time.monotonic()))
        print(f"phase: {name}", flush=True)

    try:
        phase("steady")
        time.sleep(args.steady)
        rss_before = rss_mb(server.pid)  # warmed, under load: the baseline for growth
        phase("exporting v2")
        run([*export, "export.version=2"], work)
        phase("switching to v2")  # the folder is in place: the server loads and warms it
        wait_for(lambda: 2 in available_versions(ports[1]), 180, "version 2 to load")
        time.sleep(2)
        phase("after v2")
        time.sleep(args.steady)
        phase("corrupt v3 present")
        shutil.copytree(os.path.join(base, "2"), os.path.join(base, ".v3"))
        with open(os.path.join(base, ".v3", "saved_model.pb"), "r+b") as f:
            f.truncate(100)
        os.replace(os.path.join(base, ".v3"), os.path.join(base, "3"))
        time.sleep(args.steady)
        phase("v3 removed")
        shutil.rmtree(os.path.join(base, "3"))
        time.sleep(args.steady / 2)
        phase("malformed requests")
        malformed = send_malformed(*ports)
        time.sleep(2)
        phase("after")
        time.sleep(args.steady / 2)
    finally:
        load.stop()
        rss_after = rss_mb(server.pid)
        server.terminate()
        server.wait(30)

    rows = []
    for name, _ in phases:
        got = [r for r in load.records if r[0] == name]
        ok = [r[2] for r in got if r[3] == "OK"]
        failed: dict[str, int] = {}
        for r in got:
            if r[3] != "OK":
                failed[r[3]] = failed.get(r[3], 0) + 1
        rows.append(
            {
                "phase": name,
                "requests": len(got),
                "failed": failed,
                "p50_ms": 1000 * statistics.median(ok) if ok else float("nan"),
                "p99_ms": 1000 * percentile(ok, 0.99),
            }
        )
    wrong = [m for m in malformed if str(m["got"]) != str(m["expected"]) or m["leaked"]]
    steady_p99 = rows[0]["p99_ms"]
    switch_p99 = next(r["p99_ms"] for r in rows if r["phase"] == "switching to v2")
    summary = {
        "machine": f"{platform.node()} ({os.cpu_count()} cores), {platform.platform()}",
        "clients": args.clients,
        "requests": len(load.records),
        "failed_good_requests": sum(sum(r["failed"].values()) for r in rows),
        "malformed_cases": len(malformed),
        "malformed_wrong": wrong,
        "rss_mb_start": rss_start,
        "rss_mb_before": rss_before,
        "rss_mb_after": rss_after,
        "switch_p99_over_steady_p99": switch_p99 / steady_p99,
        "phases": rows,
    }
    lines = [
        "# Serving under faults (benchmarks/serving_faults.py)",
        "",
        f"Machine: {summary['machine']}. {args.clients} clients (half gRPC, half REST), "
        f"`tfllm serve` of the embedded default's shape (export.max_new_tokens=8).",
        "",
        "| phase | requests | failed good requests | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        failed = ", ".join(f"{k}: {v}" for k, v in r["failed"].items()) or "0"
        lines.append(
            f"| {r['phase']} | {r['requests']} | {failed} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} |"
        )
    lines += [
        "",
        f"- Good requests sent: {summary['requests']}; failed: {summary['failed_good_requests']}.",
        f"- p99 while switching to v2 / steady p99: {summary['switch_p99_over_steady_p99']:.2f}.",
        f"- Malformed cases: {len(malformed)} "
        f"({sum(m['transport'] == 'rest' for m in malformed)} REST, "
        f"{sum(m['transport'] == 'grpc' for m in malformed)} gRPC); answered with the wrong code "
        f"or with exception text: {len(wrong)}.",
        f"- Server RSS: {rss_start:.0f} MB 5 s into the load, {rss_before:.0f} MB after the "
        f"steady phase (the baseline), {rss_after:.0f} MB at the end "
        f"({100 * (rss_after / rss_before - 1):+.1f}% over the baseline).",
    ]
    for m in wrong:
        lines.append(
            f"  - wrong: {m['transport']} {m['case']}: expected {m['expected']}, got {m['got']}"
        )
    save_results("serving_faults", "\n".join(lines), summary, default=str)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
