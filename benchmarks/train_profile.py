"""Where a training step of nanoGPT's CPU shakespeare_char shape goes, beside nanoGPT itself.

    python benchmarks/train_profile.py [--nanogpt PATH] [--rounds 3]
        [--experiments shakespeare_char shakespeare_char_speedrun]

Issue 25 asks for tokens/s at 1.3x nanoGPT's on its own shape (4 layers of 128, 4 heads,
12 rows of 64 tokens) and for a profile of the train step. This measures, each contender in its
own process (default threads, as `tfllm train` and nanoGPT's `train.py` run), the contenders'
order rotating every round, medians over the rounds:

- `tfllm train experiment=E` for 250 steps (steps_per_execution 50, the first execution,
  which traces and compiles, left out): the product's tokens/s;
- the same model and optimizer, built by `tfllm.training.trainer.Trainer`, in three
  XLA-compiled functions: the forward pass and loss, forward and backward, and the whole step
  (gradients, clipping to the global norm, the optimizer's update): what each part costs;
- nanoGPT's own `model.py` from a local checkout (`--nanogpt`; eager torch, float32, its
  `configure_optimizers` AdamW, gradient clipping 1.0, as its `train.py` runs) on the same
  shape, timed the same three ways;
- the step's matrix-multiply floor: every matrix product of one training step of this shape
  (each projection's forward, input gradient and weight gradient; the attention products and
  their gradients; the output head), each run alone with its operands laid out as the backward
  pass has them, summed per step, in XLA, in TensorFlow's graph mode and in torch: how long a
  step would take if nothing but its matrix products ran, at each runtime's own kernels.

`--nanogpt` is a path to a nanoGPT checkout (github.com/karpathy/nanoGPT; not a dependency);
without it, or without torch, the torch columns are left out.

Prints Markdown tables and writes them (and JSON) to benchmarks/results/train_profile.*.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.append(HERE)  # last: benchmarks/tokenizers.py must not shadow the tokenizers package
from machine import cpu_name  # noqa: E402
from results_file import save_results  # noqa: E402

DATA = os.path.join(REPO, "..", "shared", "data", "tinyshakespeare.txt")
# nanoGPT's CPU "baby" run (config/train_shakespeare_char.py with its README's CPU overrides).
SHAPE = {"layers": 4, "heads": 4, "width": 128, "ffn": 512, "block": 64, "batch": 12, "vocab": 65}
TRAIN_STEPS = 250
STEPS_PER_EXECUTION = 50


def gemms(shape: dict[str, int]) -> list[dict[str, Any]]:
    """Every matrix product of one training step of a GPT of this shape, with how often it
    runs: `(batch, m, k, n, transpose)`, where `transpose` says how the backward pass holds its
    operands (`a` for Xᵀ·dY, `b` for dY·Wᵀ). Attention products are batched over rows x heads."""
    L, d, f, t, v = shape["layers"], shape["width"], shape["ffn"], shape["block"], shape["vocab"]
    m, bh, hd = shape["batch"] * t, shape["batch"] * shape["heads"], d // shape["heads"]
    out: list[dict[str, Any]] = []

    def projection(name: str, k: int, n: int, count: int) -> None:
        out.append(dict(name=f"{name} forward", batch=1, m=m, k=k, n=n, t="", count=count))
        out.append(dict(name=f"{name} dX = dY·Wᵀ", batch=1, m=m, k=n, n=k, t="b", count=count))
        out.append(dict(name=f"{name} dW = Xᵀ·dY", batch=1, m=k, k=m, n=n, t="a", count=count))

    projection("q, k, v", d, 3 * d, L)
    projection("attention output", d, d, L)
    projection("MLP up", d, f, L)
    projection("MLP down", f, d, L)
    projection("head", d, v, 1)
    attention = [
        ("scores Q·Kᵀ", t, hd, t, "b"),
        ("values P·V", t, t, hd, ""),
        ("dP = dO·Vᵀ", t, hd, t, "b"),
        ("dV = Pᵀ·dO", t, t, hd, "a"),
        ("dQ = dS·K", t, t, hd, ""),
        ("dK = dSᵀ·Q", t, t, hd, "a"),
    ]
    for name, mm, k, n, tr in attention:
        out.append(dict(name=f"attention {name}", batch=bh, m=mm, k=k, n=n, t=tr, count=L))
    for g in out:
        g["flops"] = 2 * g["batch"] * g["m"] * g["k"] * g["n"]
    return out


def median_time(fn: Callable[[], Any], calls: int, repeats: int = 7) -> float:
    """Seconds per call: the median over `repeats` timings of `calls` calls, after a warm-up."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


# ----- workers (each runs in its own process and prints one JSON line) ------------------------
def operands(g: dict[str, Any], copies: int, rng) -> tuple[list, list]:
    """`copies` distinct operand pairs of a product, laid out as `g['t']` says."""
    b, m, k, n = g["batch"], g["m"], g["k"], g["n"]
    lead = (b,) if b > 1 else ()
    a_shape = (*lead, k, m) if g["t"] == "a" else (*lead, m, k)
    b_shape = (*lead, n, k) if g["t"] == "b" else (*lead, k, n)
    a = [rng.standard_normal(a_shape, dtype="float32") for _ in range(copies)]
    w = [rng.standard_normal(b_shape, dtype="float32") for _ in range(copies)]
    return a, w


def floor_worker(backend: str, copies: int = 8) -> dict[str, Any]:
    """Milliseconds of each product of the step, run `copies` times on distinct operands in one
    call (so call overhead and caches do not flatter or penalize it), per product."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = {}
    if backend == "torch":
        import torch

        peak_a = torch.randn(2048, 2048)
        peak = 2 * 2048**3 / median_time(lambda: peak_a @ peak_a, 3, 5) / 1e9
        for g in gemms(SHAPE):
            a, w = operands(g, copies, rng)
            a, w = [torch.from_numpy(x) for x in a], [torch.from_numpy(x) for x in w]
            ta, tb = g["t"] == "a", g["t"] == "b"

            def run(a=a, w=w, ta=ta, tb=tb):
                return [
                    (x.transpose(-1, -2) if ta else x) @ (y.transpose(-1, -2) if tb else y)
                    for x, y in zip(a, w, strict=True)
                ]

            rows[g["name"]] = median_time(run, 20) / copies * 1e3
        return {"backend": backend, "ms": rows, "peak_gflops": peak}
    import tensorflow as tf

    jit = backend == "xla"
    peak_a = tf.random.normal([2048, 2048])
    peak_fn = tf.function(lambda x: tf.matmul(x, x), jit_compile=jit)
    peak = 2 * 2048**3 / median_time(lambda: peak_fn(peak_a).numpy(), 3, 5) / 1e9
    for g in gemms(SHAPE):
        a, w = operands(g, copies, rng)
        a, w = [tf.constant(x) for x in a], [tf.constant(x) for x in w]
        ta, tb = g["t"] == "a", g["t"] == "b"

        def products(a, w, ta=ta, tb=tb):
            return [
                tf.matmul(x, y, transpose_a=ta, transpose_b=tb) for x, y in zip(a, w, strict=True)
            ]

        fn = tf.function(products, jit_compile=jit)
        rows[g["name"]] = median_time(lambda fn=fn, a=a, w=w: [o.numpy() for o in fn(a, w)], 20)
        rows[g["name"]] *= 1e3 / copies
    return {"backend": backend, "ms": rows, "peak_gflops": peak}


def tfllm_worker(experiment: str, data: str) -> dict[str, Any]:
    """The experiment's model and optimizer as `tfllm train` builds them; forward, forward and
    backward, and the whole step, each one XLA-compiled function, on one training batch."""
    import tensorflow as tf

    from tfllm.config import compose
    from tfllm.training.trainer import Trainer

    run_dir = tempfile.mkdtemp(prefix="train_profile_")
    cfg = compose(
        "config",
        [f"experiment={experiment}", f"data.path={data}", f"run_dir={run_dir}", "seed=0"],
    )
    cfg.pop("run_dir")
    trainer = Trainer(cfg, run_dir)
    model, optimizer = trainer.model, trainer.optimizer
    variables = model.trainable_variables
    clip = float(cfg["trainer"]["clip_norm"])
    batch_rows, length = SHAPE["batch"], SHAPE["block"]
    ids = tf.random.stateless_uniform(
        [batch_rows, length + 1], [0, 0], maxval=SHAPE["vocab"], dtype=tf.int32
    )
    batch = {
        "token_ids": ids[:, :-1],
        "labels": ids[:, 1:],
        "loss_weights": tf.ones([batch_rows, length]),
    }

    def loss(b):
        total, weight = model.loss_terms(b, training=True)
        return total / weight

    def grads(b):
        with tf.GradientTape() as tape:
            value = loss(b)
        return value, [tf.convert_to_tensor(g) for g in tape.gradient(value, variables)]

    def step(b):
        value, g = grads(b)
        factor = clip / tf.maximum(tf.linalg.global_norm(g), clip)
        optimizer.apply([x * factor for x in g], variables)
        return value

    forward = tf.function(loss, jit_compile=True, autograph=False)
    backward = tf.function(grads, jit_compile=True, autograph=False)
    whole = tf.function(step, jit_compile=True, autograph=False)
    ms = {
        "forward": median_time(lambda: forward(batch).numpy(), 10) * 1e3,
        "forward + backward": median_time(lambda: backward(batch)[0].numpy(), 10) * 1e3,
        "step": median_time(lambda: whole(batch).numpy(), 10) * 1e3,
    }
    params = sum(int(v.shape.num_elements()) for v in variables)
    return {"experiment": experiment, "ms": ms, "params": params}


def nanogpt_worker(path: str) -> dict[str, Any]:
    """nanoGPT's model and AdamW (its own code) on the same shape, timed as `tfllm_worker`."""
    import torch

    sys.path.insert(0, path)
    from model import GPT, GPTConfig

    torch.manual_seed(0)
    s = SHAPE
    config = GPTConfig(
        block_size=s["block"],
        vocab_size=s["vocab"],
        n_layer=s["layers"],
        n_head=s["heads"],
        n_embd=s["width"],
        dropout=0.0,
        bias=False,
    )
    model = GPT(config)
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")
    x = torch.randint(0, s["vocab"], (s["batch"], s["block"]))
    y = torch.randint(0, s["vocab"], (s["batch"], s["block"]))

    def forward():
        return model(x, y)[1].item()

    def backward():
        _, value = model(x, y)
        value.backward()
        model.zero_grad(set_to_none=True)
        return value.item()

    def step():
        _, value = model(x, y)
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return value.item()

    ms = {
        "forward": median_time(forward, 10) * 1e3,
        "forward + backward": median_time(backward, 10) * 1e3,
        "step": median_time(step, 10) * 1e3,
    }
    params = sum(p.numel() for p in model.parameters())
    return {"ms": ms, "params": params, "threads": torch.get_num_threads()}


def train_worker(experiment: str, data: str) -> dict[str, Any]:
    """`tfllm train` itself, `TRAIN_STEPS` steps: its own tokens/s (first execution left out)."""
    run_dir = tempfile.mkdtemp(prefix="train_profile_run_")
    cmd = [
        sys.executable,
        "-m",
        "tfllm.cli",
        "train",
        f"experiment={experiment}",
        f"data.path={data}",
        f"run_dir={run_dir}",
        "seed=0",
        f"trainer.max_steps={TRAIN_STEPS}",
        f"trainer.eval_every={TRAIN_STEPS}",
        f"trainer.log_every={TRAIN_STEPS}",
        f"trainer.checkpoint_every={TRAIN_STEPS}",
        "trainer.eval_batches=1",
        "trainer.callbacks=[progress]",
        f"trainer.steps_per_execution={STEPS_PER_EXECUTION}",
    ]
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    return {"experiment": experiment, "tokens_per_sec": metrics["mean_tokens_per_sec"]}


def run_worker(kind: str, arg: str, data: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", kind, arg, "--data", data],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----- report ----------------------------------------------------------------------------------
def report(args, results: dict[str, list[dict[str, Any]]]) -> None:
    tokens = SHAPE["batch"] * SHAPE["block"]
    table = gemms(SHAPE)
    gemm_flops = sum(g["flops"] * g["count"] for g in table)
    floors = {}  # backend -> {product name: median ms}
    peaks = {}
    for backend in [b for b in ("xla", "graph", "torch") if f"floor:{b}" in results]:
        runs = results[f"floor:{backend}"]
        floors[backend] = {
            g["name"]: statistics.median([r["ms"][g["name"]] for r in runs]) for g in table
        }
        peaks[backend] = statistics.median([r["peak_gflops"] for r in runs])
    floor_ms = {b: sum(f[g["name"]] * g["count"] for g in table) for b, f in floors.items()}
    peak = max(peaks.values())

    def parts(key: str) -> dict[str, float]:
        runs = results[key]
        return {p: statistics.median([r["ms"][p] for r in runs]) for p in runs[0]["ms"]}

    contenders = []  # (name, parts ms, floor backend, tokens/s of the product run or None)
    for e in args.experiments:
        trained = results.get(f"train:{e}")
        tps = statistics.median([r["tokens_per_sec"] for r in trained]) if trained else None
        contenders.append((f"tfllm `experiment={e}` (XLA)", parts(f"tfllm:{e}"), "xla", tps, e))
    nano = None
    if "nanogpt:" in results:
        nanogpt = parts("nanogpt:")
        contenders.append(("nanoGPT (its model.py, eager torch)", nanogpt, "torch", None, ""))
        nano = nanogpt["step"]

    lines = [
        "# A training step of nanoGPT's CPU shakespeare_char shape, part by part",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores; default threads in every contender. "
        f"Shape: {SHAPE['layers']} layers of {SHAPE['width']}, {SHAPE['heads']} heads, "
        f"{SHAPE['batch']} rows of {SHAPE['block']} tokens ({tokens} tokens a step). Medians "
        f"over {args.rounds} rounds, each contender in its own process, the order rotating "
        "each round. Matmul peak (fp32, 2048³): "
        + ", ".join(f"{b} {p:.0f} GFLOP/s" for b, p in peaks.items())
        + f". Command: `{' '.join(['python benchmarks/train_profile.py', *sys.argv[1:]])}`",
        "",
        "| contender | step ms | forward ms | backward ms | update ms | tokens/s (step) | "
        "`tfllm train` tokens/s | matmul floor ms | floor share | rest ms | matmul FLOP/s "
        "share of peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    for name, p, backend, tps, experiment in contenders:
        step, fwd, fb = p["step"], p["forward"], p["forward + backward"]
        floor = floor_ms.get(backend)
        row = {
            "contender": name,
            "experiment": experiment,
            "ms": p,
            "tokens_per_sec_step": tokens / step * 1e3,
            "tfllm_train_tokens_per_sec": tps,
            "floor_backend": backend,
            "floor_ms": floor,
        }
        rows.append(row)
        lines.append(
            f"| {name} | {step:.1f} | {fwd:.1f} | {fb - fwd:.1f} | {step - fb:.1f} | "
            f"{tokens / step * 1e3:,.0f} | {f'{tps:,.0f}' if tps else '-'} | "
            + (
                f"{floor:.1f} ({backend}) | {100 * floor / step:.0f}% | {step - floor:.1f} | "
                if floor
                else "- | - | - | "
            )
            + f"{100 * gemm_flops / step / 1e6 / peak:.0f}% |"
        )
    lines += [
        "",
        f"The step's matrix products: {gemm_flops / 1e9:.2f} GFLOP (recipe shape, vocabulary "
        f"{SHAPE['vocab']}; the speedrun's SwiGLU has its own widths, so its floor is "
        "not this one). Each product timed alone, 8 on distinct operands per call, "
        "milliseconds per product and GFLOP/s:",
        "",
        "| product | batch × m × k × n | per step | "
        + " | ".join(f"{b} ms | {b} GFLOP/s" for b in floors)
        + " |",
        "|---|---|---|" + "---|---|" * len(floors),
    ]
    for g in table:
        cells = " | ".join(
            f"{floors[b][g['name']]:.3f} | {g['flops'] / floors[b][g['name']] / 1e6:.0f}"
            for b in floors
        )
        lines.append(
            f"| {g['name']} | {g['batch']}×{g['m']}×{g['k']}×{g['n']} | {g['count']} | {cells} |"
        )
    lines.append(
        "| **all, one step** | | | "
        + " | ".join(
            f"**{floor_ms[b]:.1f}** | {gemm_flops / floor_ms[b] / 1e6:.0f}" for b in floors
        )
        + " |"
    )
    if nano:
        budget = nano / 1.3
        lines += [
            "",
            f"1.3× nanoGPT's tokens/s is a step of {budget:.1f} ms here (nanoGPT's step: "
            f"{nano:.1f} ms). The step's matrix products alone take "
            + ", ".join(
                f"{floor_ms[b]:.1f} ms in {b} ({100 * floor_ms[b] / budget:.0f}% of that budget)"
                for b in floors
            )
            + ".",
        ]
    save_results(
        "train_profile",
        "\n".join(lines),
        {
            "args": vars(args),
            "cpu": cpu_name(),
            "shape": SHAPE,
            "gemm_flops": gemm_flops,
            "peaks_gflops": peaks,
            "floors_ms": floor_ms,
            "floor_products_ms": floors,
            "rows": rows,
            "raw": results,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", help="path to a nanoGPT checkout (optional peer)")
    parser.add_argument("--data", default=DATA, help="tinyshakespeare.txt")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--experiments", nargs="+", default=["shakespeare_char", "shakespeare_char_speedrun"]
    )
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, arg = args.worker
        work = {
            "floor": lambda: floor_worker(arg),
            "tfllm": lambda: tfllm_worker(arg, args.data),
            "train": lambda: train_worker(arg, args.data),
            "nanogpt": lambda: nanogpt_worker(arg),
        }[kind]
        print(json.dumps(work()))
        return
    if not os.path.exists(args.data):
        parser.error(f"--data: no file at {args.data}")
    try:
        import torch  # noqa: F401

        has_torch = True
    except ImportError:
        has_torch = False
    jobs = [("floor", "xla"), ("floor", "graph")]
    jobs += [(k, e) for e in args.experiments for k in ("tfllm", "train")]
    if has_torch:
        jobs.append(("floor", "torch"))
        if args.nanogpt:
            jobs.append(("nanogpt", os.path.abspath(args.nanogpt)))
    results: dict[str, list[dict[str, Any]]] = {}
    for r in range(args.rounds):
        shift = r % len(jobs)
        for kind, arg in jobs[shift:] + jobs[:shift]:
            key = f"{kind}:{arg if kind != 'nanogpt' else ''}"
            out = run_worker(kind, arg, args.data)
            results.setdefault(key, []).append(out)
            print(f"round {r}: {key} {json.dumps(out)[:200]}", file=sys.stderr, flush=True)
    report(args, results)


if __name__ == "__main__":
    main()
