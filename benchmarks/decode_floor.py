"""What the CPU's TensorFlow kernels allow a decode step: the weight matmuls of one step, alone.

    python benchmarks/decode_floor.py [--repeats 15]

Issue 26 asks the graph-mode decode of SmolLM2-135M to reach a bandwidth bound, and bf16 and
int8 weights to decode faster than fp32. Before any decode-loop work, this measures what the
kernels under it can do, on this machine, with 2 threads:

- read bandwidth: `tf.reduce_sum` over a 512 MB fp32 variable (the best of the repeats);
- the floor: one `tf.function` that runs only the weight matmuls of one SmolLM2-135M decode
  step (30 layers of fused qkv, output, fused gate/up and down projections, then the tied
  49152 x 576 head), chained as the real step chains them, at batch 1 and 8, for each way of
  holding the weights that stock TensorFlow offers:
  - fp32 `MatMul`;
  - bf16 weights, activations cast to bf16 (`MatMul` on bfloat16);
  - int8 weights cast to fp32 inside the step (what Keras's int8 `Dense` does);
  - int8 weights and int8 activations in an integer `MatMul` (int32 accumulation);
  - int8 weights and uint8 activations (the int8 ones shifted by 128, the shift taken back through
    the bias) in oneDNN's u8s8 kernel, `QuantizedMatMulWithBiasAndDequantize` (registered in
    TensorFlow's x86 wheels; VNNI instructions where the CPU has them). Graph mode only: XLA
    has no kernel for it.

The floor is a ceiling on tokens/s for any decode loop built from these kernels: the full step
adds attention, norms, the cache write and sampling on top. Prints a Markdown table and writes it
(and JSON) to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# This folder goes last on the path: benchmarks/tokenizers.py must not shadow the `tokenizers`
# package keras-hub imports, and machine.py is imported from here.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [HERE]
from machine import cpu_flags, cpu_name  # noqa: E402
from results_file import save_results  # noqa: E402

ONEDNN = "int8 x uint8 oneDNN u8s8 kernel"
# SmolLM2-135M: hidden 576, 9 query and 3 key/value heads of 64, FFN 1536, 30 layers, tied head.
HIDDEN, QKV, FFN, LAYERS, VOCAB = 576, 576 + 2 * 192, 1536, 30, 49152


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)

    def best_ms(fn, *inputs) -> tuple[float, float]:
        fn(*inputs)
        fn(*inputs)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn(*inputs).numpy()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times), min(times)

    def read_bandwidth() -> float:
        big = tf.Variable(tf.ones([128 * 1024 * 1024]))  # 512 MB
        _, read_ms = best_ms(tf.function(lambda: tf.reduce_sum(big)))
        return 512 * 1024 * 1024 / 1e9 / (read_ms / 1e3)

    bandwidth = read_bandwidth()

    rng = tf.random.Generator.from_seed(0)
    shapes = [(HIDDEN, QKV), (HIDDEN, HIDDEN), (HIDDEN, 2 * FFN), (FFN, HIDDEN)]
    # Variables, as in a model: nothing here can be folded into a constant at trace time.
    fp32 = [[tf.Variable(rng.normal(s, stddev=0.03)) for s in shapes] for _ in range(LAYERS)]
    head = tf.Variable(rng.normal([VOCAB, HIDDEN], stddev=0.03))
    step_bytes = 4 * (sum(a * b for a, b in shapes) * LAYERS + VOCAB * HIDDEN)

    def quantize(w):
        scale = tf.reduce_max(tf.abs(w), axis=0) / 127.0
        return tf.Variable(tf.cast(tf.round(w / scale), tf.int8)), tf.Variable(scale)

    def quantize_u8s8(w):
        q, scale = quantize(w)
        # x . q = (x + 128) . q - 128 * sum(q): the kernel adds the second term as its bias.
        shift = -128.0 * tf.reduce_sum(tf.cast(q, tf.float32), axis=0)
        return tf.Variable(tf.bitcast(q, tf.qint8)), scale, tf.Variable(shift)

    layouts = {
        "fp32": (fp32, head),
        "bf16": (
            [[tf.Variable(tf.cast(w, tf.bfloat16)) for w in ws] for ws in fp32],
            tf.Variable(tf.cast(head, tf.bfloat16)),
        ),
        "int8, cast to fp32 in the step": (
            [[quantize(w) for w in ws] for ws in fp32],
            quantize(tf.transpose(head)),
        ),
        "int8 x int8 integer MatMul": (
            [[quantize(w) for w in ws] for ws in fp32],
            quantize(tf.transpose(head)),
        ),
        ONEDNN: (
            [[quantize_u8s8(w) for w in ws] for ws in fp32],
            quantize_u8s8(tf.transpose(head)),
        ),
    }

    def row_scale(x):  # activations quantized per row, symmetric abs-max
        return tf.reduce_max(tf.abs(x), axis=-1, keepdims=True) / 127.0 + 1e-12

    def project(kind, x, w, transpose_head=False):
        if kind == "fp32":
            return tf.matmul(x, w, transpose_b=transpose_head)
        if kind == "bf16":
            y = tf.matmul(tf.cast(x, tf.bfloat16), w, transpose_b=transpose_head)
            return tf.cast(y, tf.float32)
        if kind == ONEDNN:
            q, scale, shift = w
            x_scale = row_scale(x)
            xu = tf.cast(tf.round(x / x_scale) + 128.0, tf.uint8)
            y = tf.raw_ops.QuantizedMatMulWithBiasAndDequantize(
                a=tf.bitcast(xu, tf.quint8),
                b=q,
                bias=shift,
                min_a=0.0,
                max_a=255.0,  # with min_b / max_b at -127 / 127: the integer sums, unscaled
                min_b=-127.0,
                max_b=127.0,
                min_freezed_output=-1.0,  # unused for a float output
                max_freezed_output=1.0,
                Toutput=tf.float32,
                input_quant_mode="SCALED",
            )
            return y * x_scale * scale
        q, scale = w
        if kind.startswith("int8, cast"):
            return tf.matmul(x, tf.cast(q, tf.float32)) * scale
        x_scale = row_scale(x)
        xq = tf.cast(tf.round(x / x_scale), tf.int8)
        y = tf.matmul(xq, q, output_type=tf.int32)
        return tf.cast(y, tf.float32) * x_scale * scale

    def step_fn(kind, jit):
        weights, head_w = layouts[kind]

        @tf.function(jit_compile=jit)
        def step(x):  # x: [B, HIDDEN]
            for qkv, out, gate_up, down in weights:
                a = project(kind, x, qkv)  # [B, QKV]
                x = x + project(kind, a[:, :HIDDEN], out)  # [B, HIDDEN]
                h = project(kind, x, gate_up)  # [B, 2 * FFN]
                x = x + 0.01 * project(kind, h[:, :FFN] * h[:, FFN:], down)
            return project(kind, x, head_w, transpose_head=kind in ("fp32", "bf16"))

        return step

    rows = []
    contenders = [(kind, False) for kind in layouts]
    contenders += [("fp32", True), ("int8, cast to fp32 in the step", True)]
    for kind, jit in contenders:
        step = step_fn(kind, jit)
        for batch in args.batches:
            x = rng.normal([batch, HIDDEN])
            try:
                median, best = best_ms(step, x)
            except tf.errors.NotFoundError as e:  # no such kernel in this TensorFlow build
                print(f"{kind}: skipped ({e.message.splitlines()[0]})", file=sys.stderr)
                break
            rows.append(
                {
                    "weights": kind,
                    "mode": "XLA" if jit else "graph",
                    "batch": batch,
                    "median_ms": median,
                    "best_ms": best,
                    "tokens_per_sec_ceiling": 1e3 * batch / median,
                    "fp32_bytes_per_sec": step_bytes / (median / 1e3) / 1e9,
                }
            )
            print(rows[-1], file=sys.stderr, flush=True)
    fp32_median = {
        r["batch"]: r["median_ms"] for r in rows if r["weights"] == "fp32" and r["mode"] == "graph"
    }
    lines = [
        "# The weight matmuls of one SmolLM2-135M decode step, alone",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, 2 threads; CPU flags of interest: "
        f"{', '.join(cpu_flags()) or 'none'}; TensorFlow {tf.__version__}. "
        f"Read bandwidth (`reduce_sum` over 512 MB, best of {args.repeats}): "
        f"**{bandwidth:.1f} GB/s**, so fp32 weights ({step_bytes / 1e6:.0f} MB a step) bound "
        f"batch-1 decode at **{bandwidth * 1e9 / step_bytes:.1f} tokens/s**. "
        f"Median of {args.repeats} calls after two warm-ups. "
        "Command: `python benchmarks/decode_floor.py`",
        "",
        "| weights | mode | batch | matmuls ms | best ms | tokens/s ceiling | × graph fp32 time |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['weights']} | {r['mode']} | {r['batch']} | "
            f"{r['median_ms']:.1f} | {r['best_ms']:.1f} | "
            f"{r['tokens_per_sec_ceiling']:.1f} | {r['median_ms'] / fp32_median[r['batch']]:.2f} |"
        )
    save_results(
        "decode_floor",
        "\n".join(lines),
        {
            "args": vars(args),
            "bandwidth_gb_s": bandwidth,
            "cpu": cpu_name(),
            "flags": cpu_flags(),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
