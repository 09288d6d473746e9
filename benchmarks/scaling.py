"""Training throughput and MFU for 1 and 2 workers on this machine.

    pip install -e .
    python benchmarks/scaling.py [--steps 60] [--repeats 2]

The model is the embedded default's shape (`model=tiny`: 4 layers, width 128, context 256, char
tokenizer) on the embedded Shakespeare corpus, global batch 16 × 256 tokens, the same config for
every row. Rows:

- 1 worker: `tfllm train` with the default strategy (one process);
- 1 worker, MWMS: `tfllm launch workers=1` (MultiWorkerMirroredStrategy with one worker: the
  multi-worker code path without a second process);
- 2 workers: `tfllm launch workers=2` (two processes on 127.0.0.1, RING all-reduce), each
  computing half of the global batch.

tokens/s is the trainer's `mean_tokens_per_sec` (after the first execution, which traces and
compiles); MFU is that times the model's training FLOPs per token (6N + 12LDT) over the peak
matmul FLOP/s measured at the start of this run (`tfllm bench peak`'s measurement). Each row is
the median of `--repeats` runs. Prints a Markdown table and writes it and JSON to
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [HERE]
from results_file import save_results  # noqa: E402


def config(steps: int) -> list[str]:
    return [
        "model=tiny",
        "data.batch_size=16",
        "data.sequence_length=256",
        f"trainer.max_steps={steps}",
        "trainer.steps_per_execution=10",
        "trainer.log_every=10",
        f"trainer.eval_every={steps}",
        "trainer.eval_batches=2",
        f"trainer.checkpoint_every={steps}",
        "trainer.callbacks=[]",
        "schedule.warmup_steps=10",
    ]


def run(kind: str, steps: int, run_dir: str, env: dict[str, str]) -> dict:
    base = [sys.executable, "-m", "tfllm.cli"]
    if kind == "1 worker":
        args = [*base, "train", *config(steps), f"run_dir={run_dir}"]
    else:
        workers = 1 if kind == "1 worker, MWMS" else 2
        args = [*base, "launch", f"workers={workers}", "--", "train", *config(steps)]
        args += [f"run_dir={run_dir}"]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=3000)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
        return json.load(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from tfllm.training.flops import measure_peak_flops, save_peak, training_flops_per_token

    peak = measure_peak_flops(size=2048, repeats=10)
    with tempfile.TemporaryDirectory() as cache:
        save_peak(peak, cache)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TFLLM_CACHE=cache)
        rows = []
        flops_per_token = None
        for kind in ("1 worker", "1 worker, MWMS", "2 workers"):
            samples = []
            for r in range(args.repeats):
                with tempfile.TemporaryDirectory() as tmp:
                    metrics = run(kind, args.steps, os.path.join(tmp, "run"), env)
                    if flops_per_token is None:
                        from tfllm.runs import load_run

                        model, _, cfg = load_run(os.path.join(tmp, "run"))
                        flops_per_token = training_flops_per_token(
                            model, cfg["data"]["sequence_length"]
                        )
                samples.append(metrics)
                print(f"{kind} run {r + 1}: {metrics['mean_tokens_per_sec']:.0f} tokens/s")
            tps = statistics.median(m["mean_tokens_per_sec"] for m in samples)
            rows.append(
                {
                    "setup": kind,
                    "workers": samples[0].get("num_workers", 1),
                    "tokens_per_sec": tps,
                    "tokens_per_sec_runs": [m["mean_tokens_per_sec"] for m in samples],
                    "mfu": tps * flops_per_token / peak.flops,
                    "final_loss": statistics.median(m["loss"] for m in samples),
                }
            )
    base = rows[0]["tokens_per_sec"]
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_version()}"
    lines = [
        "# Training scaling: 1 and 2 workers on one machine",
        "",
        f"Machine: {machine}; measured peak fp32 matmul {peak.flops / 1e9:.1f} GFLOP/s "
        f"({peak.size}², median of {len(peak.samples)}). Model `model=tiny` "
        f"({flops_per_token / 6e6:.2f}M-parameter equivalent: {flops_per_token / 1e6:.1f} MFLOP "
        f"per token), global batch 16 × 256, {args.steps} steps, median of {args.repeats} runs.",
        "",
        "| setup | workers | tokens/s | vs 1 worker | MFU | loss at the end |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['setup']} | {row['workers']} | {row['tokens_per_sec']:.0f} | "
            f"{row['tokens_per_sec'] / base:.2f}× | {100 * row['mfu']:.1f}% | "
            f"{row['final_loss']:.4f} |"
        )
    lines += [
        "",
        "Equal losses across rows show the global-batch semantics: the same global batch and "
        "learning rate give the same run whatever the worker count.",
        "",
        f"On this {os.cpu_count()}-core machine every worker's TensorFlow uses all the cores, so "
        "two workers share them and cannot be faster than one: the rows measure the cost of the "
        "multi-worker path (MultiWorkerMirroredStrategy, RING all-reduce over localhost, one "
        "synchronization per step), not cluster speed-up, which needs a machine per worker.",
        "",
        f"Command: `python benchmarks/scaling.py --steps {args.steps} --repeats {args.repeats}`",
    ]
    save_results(
        "scaling", "\n".join(lines), {"machine": machine, "peak_flops": peak.flops, "rows": rows}
    )


if __name__ == "__main__":
    main()
