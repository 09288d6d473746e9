"""A real scaling-law sweep: 4 model sizes on tiny Shakespeare, then `tfllm scaling fit`.

    pip install -e ".[eval]"
    python benchmarks/scaling_law.py [--steps 600] [--widths 32 64 96 128]

One Hydra multirun (`tfllm train -m experiment=shakespeare_char model.hidden_dim=...`): nanoGPT's
CPU shakespeare_char setup (4 layers, 4 heads, batch 12 × 64 characters) at each width, the same
token budget for every size. `tfllm scaling fit sweep_dir=...` then fits
`L(N) = E + A / N^alpha` to the validation losses and draws it. The table, the fit (JSON) and
the plot go to benchmarks/results/scaling_law.*.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [HERE]
from results_file import RESULTS, save_results  # noqa: E402

CORPUS = os.path.abspath(os.path.join(HERE, "..", "..", "shared", "data", "tinyshakespeare.txt"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64, 96, 128])
    args = parser.parse_args()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    with tempfile.TemporaryDirectory() as tmp:
        sweep = os.path.join(tmp, "sweep")
        t0 = time.perf_counter()
        train = [
            sys.executable, "-m", "tfllm.cli", "train", "-m",
            "experiment=shakespeare_char",
            f"data.path={CORPUS}",
            f"model.hidden_dim={','.join(map(str, args.widths))}",
            f"trainer.max_steps={args.steps}",
            f"trainer.eval_every={args.steps}",
            f"trainer.checkpoint_every={args.steps}",
            "trainer.eval_batches=100",
            "trainer.callbacks=[]",
            f"hydra.sweep.dir={sweep}",
        ]  # fmt: skip
        proc = subprocess.run(train, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"the sweep failed:\n{proc.stderr[-4000:]}")
        train_seconds = time.perf_counter() - t0
        out = os.path.join(tmp, "fit")
        fit = subprocess.run(
            [
                sys.executable,
                "-m",
                "tfllm.cli",
                "scaling",
                "fit",
                f"sweep_dir={sweep}",
                f"out={out}",
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        if fit.returncode != 0:
            raise SystemExit(f"the fit failed:\n{fit.stderr[-4000:]}")
        os.makedirs(RESULTS, exist_ok=True)
        shutil.copy(os.path.join(out, "scaling_law.png"), os.path.join(RESULTS, "scaling_law.png"))
        with open(os.path.join(out, "scaling_law.json"), encoding="utf-8") as f:
            result = json.load(f)
    for point in result["points"]:
        point["run_dir"] = os.path.basename(point["run_dir"])  # the temporary path is gone
    result.update(steps=args.steps, widths=args.widths, train_seconds=train_seconds)
    with open(os.path.join(RESULTS, "scaling_law.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    lines = [
        "# Scaling law on tiny Shakespeare (4 sizes, CPU)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores. nanoGPT's CPU "
        f"shakespeare_char setup (4 layers, 4 heads, batch 12 × 64 characters), widths "
        f"{', '.join(map(str, args.widths))}, {args.steps} steps each "
        f"({args.steps * 12 * 64:,} tokens), {train_seconds:.0f} s for the sweep.",
        "",
        "| width | parameters N | validation loss | fitted L(N) |",
        "|---|---|---|---|",
    ]
    e, a, alpha = result["E"], result["A"], result["alpha"]
    for width, point in zip(args.widths, result["points"], strict=True):
        fitted = e + a / point["params"] ** alpha
        lines.append(f"| {width} | {point['params']:,} | {point['loss']:.4f} | {fitted:.4f} |")
    lines += [
        "",
        f"Fit: L(N) = {e:.4f} + {a:.4g} / N^{alpha:.4f} (rmse {result['residual_rmse']:.4f}); "
        "plot: `scaling_law.png`. With one token budget for every size the fit folds the data "
        "term into E; it describes this budget, not the compute-optimal frontier.",
        "",
        f"Command: `python benchmarks/scaling_law.py --steps {args.steps} --widths "
        f"{' '.join(map(str, args.widths))}`",
    ]
    save_results("scaling_law", "\n".join(lines))


if __name__ == "__main__":
    main()
