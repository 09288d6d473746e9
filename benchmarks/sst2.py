"""Fine-tuning on SST-2: the imported MiniLM, and a GPT that tfllm pretrained on tiny Shakespeare.

    pip install -e ".[eval]"
    python benchmarks/sst2.py [--minutes 20] [--skip-gpt]

Both are fine-tuned by the same command, `tfllm train task=classify init_from=CKPT
data.train=../shared/data/sst2/train.tsv data.val=../shared/data/sst2/dev.tsv`, with a wall-clock
budget (`trainer.max_seconds`, default 20 minutes each) on this machine:

- MiniLM: `tfllm pretrained pull minilm-l6-v2` (all-MiniLM-L6-v2, 22M parameters), mean pooling,
  64 WordPiece tokens, batch 32, AdamW 5e-5 with warmup, weight decay 0.01;
- GPT: `tfllm train experiment=shakespeare_char` (nanoGPT's CPU baby GPT, 0.8M parameters,
  characters, context 64), then fine-tuned with last-token pooling on the first 64 characters,
  batch 32, 1e-3.

Accuracy and macro-F1 on the whole dev.tsv (6,735 rows). Prints a Markdown table and writes it
and JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [HERE]
from results_file import save_results  # noqa: E402

DATA = os.path.abspath(os.path.join(HERE, "..", "..", "shared", "data"))


def tfllm(*args: str) -> str:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-m", "tfllm.cli", *args], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise SystemExit(f"tfllm {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return proc.stdout


def fine_tune(init_from: str, run_dir: str, seconds: float, extra: list[str]) -> dict:
    t0 = time.perf_counter()
    tfllm(
        "train",
        "task=classify",
        f"init_from={init_from}",
        f"data.train={DATA}/sst2/train.tsv",
        f"data.val={DATA}/sst2/dev.tsv",
        f"trainer.max_seconds={seconds}",
        "trainer.eval_batches=null",
        "trainer.log_every=50",
        "trainer.callbacks=[progress,tensorboard]",
        f"run_dir={run_dir}",
        *extra,
    )
    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    metrics["wall_seconds"] = time.perf_counter() - t0
    return metrics


def parameters(run_dir: str) -> int:
    from tfllm.evaluation.scaling_laws import count_parameters

    return count_parameters(run_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--skip-gpt", action="store_true")
    parser.add_argument("--skip-minilm", action="store_true")
    args = parser.parse_args()
    seconds = 60 * args.minutes
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        minilm = tfllm("pretrained", "pull", "minilm-l6-v2").strip().splitlines()[-1]
        m = (
            None
            if args.skip_minilm
            else fine_tune(
                minilm,
                os.path.join(tmp, "minilm"),
                seconds,
                [
                    "head.pooling=mean",
                    "data.sequence_length=64",
                    "data.batch_size=32",
                    "trainer.max_steps=3000",
                    "trainer.eval_every=3000",
                    "trainer.checkpoint_every=500",
                    "schedule.peak_learning_rate=5e-5",
                    "schedule.min_learning_rate=5e-6",
                    "schedule.warmup_steps=150",
                    "optimizer.weight_decay=0.01",
                    "model.dropout=0.1",
                ],
            )
        )
        if m is not None:
            rows.append(("MiniLM-L6 (imported, all-MiniLM-L6-v2)", parameters(minilm), m))
        if not args.skip_gpt:
            gpt = os.path.join(tmp, "gpt")
            t0 = time.perf_counter()
            tfllm(
                "train",
                "experiment=shakespeare_char",
                f"data.path={DATA}/tinyshakespeare.txt",
                "trainer.callbacks=[progress]",
                f"run_dir={gpt}",
            )
            pretrain_seconds = time.perf_counter() - t0
            g = fine_tune(
                gpt,
                os.path.join(tmp, "gpt_sst2"),
                seconds,
                [
                    "head.pooling=last_token",
                    "head.dropout=0.1",
                    "data.sequence_length=64",
                    "data.batch_size=32",
                    "trainer.max_steps=6000",
                    "trainer.eval_every=6000",
                    "trainer.checkpoint_every=1000",
                    "schedule.peak_learning_rate=1e-3",
                    "schedule.min_learning_rate=1e-4",
                    "schedule.warmup_steps=100",
                ],
            )
            g["pretrain_seconds"] = pretrain_seconds
            rows.append(("tfllm GPT (shakespeare_char, then fine-tuned)", parameters(gpt), g))
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores"
    lines = [
        "# SST-2 fine-tuning",
        "",
        f"Machine: {machine}; a budget of {args.minutes:.0f} minutes of fine-tuning each "
        "(`trainer.max_seconds`), then accuracy on all of `sst2/dev.tsv` (6,735 rows).",
        "",
        "| model | parameters | steps | fine-tuning wall s | dev accuracy | dev macro-F1 |",
        "|---|---|---|---|---|---|",
    ]
    for name, params, metrics in rows:
        lines.append(
            f"| {name} | {params:,} | {metrics['step']} | {metrics['wall_seconds']:.0f} | "
            f"{metrics['val_accuracy']:.4f} | {metrics['val_macro_f1']:.4f} |"
        )
    lines += ["", f"Command: `python benchmarks/sst2.py --minutes {args.minutes:g}`"]
    suffix = "_gpt" if args.skip_minilm else "_minilm" if args.skip_gpt else ""
    save_results(
        f"sst2{suffix}",
        "\n".join(lines),
        {"machine": machine, "rows": [{"model": n, "parameters": p, **m} for n, p, m in rows]},
    )


if __name__ == "__main__":
    main()
