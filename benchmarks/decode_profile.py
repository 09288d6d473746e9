"""Where a graph-mode decode step of SmolLM2-135M spends its time, op type by op type.

    python benchmarks/decode_profile.py [--batches 1 8] [--steps 120]

Issue 26 asks to profile the decode step that exports and TF Serving run (graph mode, no XLA)
and remove what is not weight reading. This runs `tfllm.generation.decoder.Generator` (the
same `decode_loop` the exports trace) on SmolLM2-135M-Instruct with 2 threads and reports:

- the step time: the difference between two greedy calls of different lengths, per new token
  (so prefill, tokenization and the call's fixed costs cancel out);
- the ops of the traced loop body by type (the graph as traced, before Grappler rewrites it);
- a TensorFlow profile of one call (`tf.profiler`), the kernel time of every op summed per op
  type over the executor's threads and divided by the decoded tokens: what each kind of op
  costs a step, and its share of all kernel time. Two inter-op threads can run kernels at the
  same time, so kernel time per step can exceed the step's wall time.

Prints Markdown tables and writes them (and JSON) to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# This folder goes last on the path: benchmarks/tokenizers.py must not shadow the `tokenizers`
# package keras-hub imports, and machine.py is imported from here.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [HERE]
from machine import cpu_name  # noqa: E402
from results_file import save_results  # noqa: E402

PROMPT = "The capital of France is"
# SmolLM2-135M's weight matmuls: (input, output) of each layer's projections.
SHAPES = {
    "qkv (fused)": (576, 960),
    "attention output": (576, 576),
    "gate and up (fused)": (576, 3072),
    "down": (1536, 576),
}


def numpy_blas() -> str:
    import numpy as np

    try:
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{info.get('name', '?')} {info.get('version', '')}".strip()
    except Exception:  # numpy < 1.26 has no dict mode
        return "unknown"


def loop_body_ops(concrete) -> collections.Counter:
    """Op types in the body of the decode loop's `While` (nested functions included)."""
    graph_def = concrete.graph.as_graph_def()
    functions = {f.signature.name: f for f in graph_def.library.function}
    loops = [n for n in graph_def.node if n.op in ("While", "StatelessWhile")]
    bodies = [n.attr["body"].func.name for n in loops]
    if len(bodies) != 1:
        raise RuntimeError(f"expected one While in the decode loop, found {len(bodies)}")
    counts: collections.Counter = collections.Counter()

    def visit(name: str) -> None:
        for node in functions[name].node_def:
            counts[node.op] += 1
            for attr in node.attr.values():
                if attr.func.name in functions:
                    visit(attr.func.name)

    visit(bodies[0])
    return counts


def kernel_time_by_op(trace_dir: str) -> dict[str, list[float]]:
    """`{op type: [events, milliseconds]}` from the profile's executor threads."""
    try:
        from tsl.profiler.protobuf import xplane_pb2
    except ImportError:  # older layouts ship it under tensorflow
        from tensorflow.tsl.profiler.protobuf import xplane_pb2
    (path,) = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "")
                kind = name.rsplit(":", 1)[-1]
                if ":" not in name or kind in ("Process", "ParallelFor"):
                    continue  # the executor's and thread pool's events contain the kernels
                totals[kind][0] += 1
                totals[kind][1] += event.duration_ps / 1e9
    return dict(totals)


def projection_speeds(tf, repeats: int) -> list[dict]:
    """Batch-1 time of each SmolLM2-135M weight matmul shape: TensorFlow's `MatMul` (30 of
    them chained in one graph, as the 30 layers run them) against numpy's BLAS (the same
    weights and chain), median per matmul."""
    import numpy as np

    rows = []
    rng = np.random.default_rng(0)
    for name, (k, n) in SHAPES.items():
        weights = [rng.standard_normal((k, n), dtype=np.float32) * 0.02 for _ in range(30)]
        variables = [tf.Variable(w) for w in weights]
        x = rng.standard_normal((1, k), dtype=np.float32)

        @tf.function(autograph=False)
        def chain(x, variables=variables, k=k, n=n):
            for w in variables:  # each input depends on the previous output: (1, k)
                y = tf.matmul(x, w)  # (1, n)
                y = y[:, :k] if n >= k else tf.pad(y, [[0, 0], [0, k - n]])  # (1, k)
                x = x + 1e-3 * y
            return x

        def timed(fn) -> float:
            fn(), fn()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start) / 30 * 1e3)
            return statistics.median(times)

        tf_ms = timed(lambda chain=chain, x=x: chain(tf.constant(x)).numpy())

        def numpy_chain(x=x, weights=weights, k=k, n=n):  # the same chain, in numpy
            for w in weights:
                y = x @ w
                y = y[:, :k] if n >= k else np.pad(y, [[0, 0], [0, k - n]])
                x = x + np.float32(1e-3) * y
            return x

        np_ms = timed(numpy_chain)
        mb = k * n * 4 / 1e6
        rows.append(
            {"projection": name, "shape": [k, n], "tf_ms": tf_ms, "numpy_ms": np_ms, "mb": mb}
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--steps",
        type=int,
        default=120,
        help="the profiled call decodes 8 + steps new tokens (128: pretrained_generate's calls)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top", type=int, default=14, help="op types shown per batch")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    from tfllm.generation.decoder import GenerationConfig, Generator
    from tfllm.pretrained.packages import pull
    from tfllm.runs import load_run

    model, tokenizer, _ = load_run(str(pull("smollm2-135m-instruct")))
    generator = Generator(model, tokenizer)
    prompt = tokenizer.encode_one(PROMPT)
    short, long = 8, 8 + args.steps
    results = []
    for batch in args.batches:
        prompts = [prompt] * batch

        def call(new_tokens: int, prompts=prompts) -> float:
            config = GenerationConfig(max_new_tokens=new_tokens, temperature=0.0)
            start = time.perf_counter()
            generator.generate_ids(prompts, config)
            return time.perf_counter() - start

        call(short), call(long)  # traces (one per buffer length) and warms up
        steps = [(call(long) - call(short)) / args.steps * 1e3 for _ in range(args.repeats)]
        step_ms = statistics.median(steps)
        trace_dir = tempfile.mkdtemp(prefix="decode_profile_")
        try:
            tf.profiler.experimental.start(trace_dir)
            call(long)
            tf.profiler.experimental.stop()
            kernels = kernel_time_by_op(trace_dir)
        finally:
            shutil.rmtree(trace_dir, ignore_errors=True)
        concrete = generator.decode_graph(
            prompts, GenerationConfig(max_new_tokens=long, temperature=0.0)
        )
        body = loop_body_ops(concrete)
        total_kernel = sum(ms for _, ms in kernels.values())
        row = {
            "batch": batch,
            "step_ms": step_ms,
            "step_ms_all": steps,
            "tokens_per_sec": 1e3 * batch / step_ms,
            "loop_body_ops": sum(body.values()),
            "loop_body_ops_by_type": dict(body.most_common()),
            "kernel_ms_per_step": total_kernel / long,
            "kernels_per_step": sum(n for n, _ in kernels.values()) / long,
            "kernels": {
                kind: {"events_per_step": n / long, "ms_per_step": ms / long}
                for kind, (n, ms) in sorted(kernels.items(), key=lambda kv: -kv[1][1])
            },
        }
        results.append(row)
        print(
            json.dumps({k: row[k] for k in ("batch", "step_ms", "kernel_ms_per_step")}),
            file=sys.stderr,
            flush=True,
        )

    projections = projection_speeds(tf, 15)
    lines = [
        "# A graph-mode decode step of SmolLM2-135M-Instruct, op type by op type",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, 2 intra-op and 2 inter-op threads; "
        f"TensorFlow {tf.__version__}. `Generator` (the decode loop exports trace), greedy. "
        f"Step time: median over {args.repeats} pairs of calls of {short} and {long} new tokens, "
        f"the difference per token. Kernel time: a `tf.profiler` trace of one {long}-token call, "
        "summed per op type over the executor's threads, per decoded token (prefill included, "
        "spread over the tokens). Command: "
        f"`{' '.join(['python', 'benchmarks/decode_profile.py', *sys.argv[1:]])}`",
        "",
        "| batch | step ms | tokens/s | kernel ms per step | MatMul ms per step | "
        "MatMul share of the step | kernels run per step | ops in the traced loop body |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        matmul = r["kernels"].get("MatMul", {"ms_per_step": 0.0})["ms_per_step"]
        lines.append(
            f"| {r['batch']} | {r['step_ms']:.1f} | {r['tokens_per_sec']:.1f} | "
            f"{r['kernel_ms_per_step']:.1f} | {matmul:.1f} | {100 * matmul / r['step_ms']:.0f}% | "
            f"{r['kernels_per_step']:,.0f} | {r['loop_body_ops']:,} |"
        )
    for r in results:
        lines += [
            "",
            f"Batch {r['batch']}: kernel time per decoded token, the {args.top} costliest op types",
            "",
            "| op type | ms per step | share of kernel time | kernels per step | "
            "in the traced loop body |",
            "|---|---|---|---|---|",
        ]
        for kind, k in list(r["kernels"].items())[: args.top]:
            lines.append(
                f"| {kind} | {k['ms_per_step']:.2f} | "
                f"{100 * k['ms_per_step'] / r['kernel_ms_per_step']:.1f}% | "
                f"{k['events_per_step']:.0f} | {r['loop_body_ops_by_type'].get(kind, 0)} |"
            )
    lines += [
        "",
        "Each layer's weight matmul at batch 1, alone: TensorFlow's `MatMul` (30 chained in one "
        "graph, as the layers run them, each output sliced or padded and added to the next "
        f"input) and numpy's BLAS ({numpy_blas()}) on the same chain, median per matmul over "
        "15 repeats",
        "",
        "| projection | weights | TF ms | TF GB/s | numpy ms | numpy GB/s |",
        "|---|---|---|---|---|---|",
    ]
    for p in projections:
        lines.append(
            f"| {p['projection']} | {p['shape'][0]}×{p['shape'][1]} ({p['mb']:.1f} MB) | "
            f"{p['tf_ms']:.3f} | {p['mb'] / p['tf_ms']:.1f} | {p['numpy_ms']:.3f} | "
            f"{p['mb'] / p['numpy_ms']:.1f} |"
        )
    save_results(
        "decode_profile",
        "\n".join(lines),
        {"args": vars(args), "cpu": cpu_name(), "rows": results, "projections": projections},
    )


if __name__ == "__main__":
    main()
