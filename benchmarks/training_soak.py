"""Training soak: kills, corrupt files and a full disk must never lose a run's progress.

    pip install -e .
    python benchmarks/training_soak.py [--kills 12] [--steps 200] [--seed 0]

A tiny model (`debug=fast`'s shape) is trained once without interruption for the reference
weights (`metrics.json`'s `weights_sha256`). Then each case runs the same command in a fresh
run directory and must end bit-identical to the reference, or with one `tfllm: error:` line
and nothing lost:

- `kill -9` at random moments (checkpoint writes included), `--kills` times, then let it finish;
- garbage in the checkpoint state file (`checkpoints/checkpoint`) halfway, then resume;
- a 0-byte `tokenizer/tokenizer.json` halfway (what a full disk did before writes were atomic):
  one error naming the file, the checkpoints untouched;
- a full disk at checkpoint time (a per-file size limit, so every checkpoint write fails): one
  error, then the same command with space again finishes;
- a run whose newest checkpoint is truncated: resumes from the one before it.

Prints a Markdown table and writes it (and JSON) to benchmarks/results/training_soak.*.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [HERE]
from results_file import save_results  # noqa: E402

TFLLM = [sys.executable, "-m", "tfllm.cli"]
CORPUS = (
    "BERNARDO:\nWho's there?\n\nFRANCISCO:\nNay, answer me: stand, and unfold yourself.\n\n"
    "BERNARDO:\nLong live the king!\n\nFRANCISCO:\nBernardo?\n\nBERNARDO:\nHe.\n\n"
) * 40


def command(corpus: str, run_dir: str, steps: int) -> list[str]:
    return [
        *TFLLM,
        "train",
        "debug=fast",
        f"data.path={corpus}",
        f"run_dir={run_dir}",
        f"trainer.max_steps={steps}",
        "trainer.checkpoint_every=10",
        "trainer.eval_every=50",
        "trainer.log_every=50",
        "trainer.callbacks=[]",
        "model.dropout=0.1",
    ]


def digest(run_dir: str) -> str | None:
    try:
        with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
            return json.load(f)["weights_sha256"]
    except (OSError, ValueError, KeyError):
        return None


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kwargs)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [x for x in proc.stderr.splitlines() if x.startswith("tfllm: error:")]


def one_clear_error(proc: subprocess.CompletedProcess) -> bool:
    return proc.returncode == 2 and len(error_lines(proc)) == 1 and "Traceback" not in proc.stderr


def checkpoints(run_dir: str) -> list[str]:
    folder = os.path.join(run_dir, "checkpoints")
    return (
        sorted(x for x in os.listdir(folder) if x.endswith(".index"))
        if os.path.isdir(folder)
        else []
    )


def run_until(cmd: list[str], run_dir: str, marker: str) -> None:
    """Run `cmd` until `marker` appears in its checkpoints folder, then SIGKILL it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = os.path.join(run_dir, "checkpoints", marker)
    while not os.path.exists(path) and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def case_kills(cmd, run_dir, kills: int, rng: random.Random, first_seconds: float) -> dict:
    stale_seen = 0
    for _ in range(kills):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, first_seconds))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        folder = os.path.join(run_dir, "checkpoints")
        if os.path.isdir(folder):
            stale_seen += sum(x.endswith("_temp") for x in os.listdir(folder))
    final = run(cmd)
    return {
        "outcome": digest(run_dir),
        "detail": f"{kills} kills; {len(checkpoints(run_dir))} checkpoints kept; "
        f"{stale_seen} half-written checkpoint folders seen after kills (removed at start)",
        "rc": final.returncode,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix="tfllm-soak-")
    corpus = os.path.join(work, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(CORPUS)

    def fresh(name: str) -> tuple[str, list[str]]:
        run_dir = os.path.join(work, name)
        return run_dir, command(corpus, run_dir, args.steps)

    print("reference run ...", flush=True)
    ref_dir, ref_cmd = fresh("reference")
    start = time.perf_counter()
    proc = run(ref_cmd)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    reference = digest(ref_dir)
    rows = []

    def record(case: str, ok: bool, detail: str) -> None:
        rows.append({"case": case, "ok": ok, "detail": detail})
        print(f"{'ok  ' if ok else 'FAIL'} {case}: {detail}", flush=True)

    run_dir, cmd = fresh("kills")
    result = case_kills(cmd, run_dir, args.kills, rng, seconds)
    record("kill -9 at random moments", result["outcome"] == reference, result["detail"])

    half = f"ckpt-{args.steps // 2}.index"
    run_dir, cmd = fresh("state")
    run_until(cmd, run_dir, half)
    with open(os.path.join(run_dir, "checkpoints", "checkpoint"), "wb") as f:
        f.write(b"model_checkpoint_path: {{{ \x00\xff garbage")
    proc = run(cmd)
    record(
        "garbage checkpoint state file",
        digest(run_dir) == reference,
        f"resumed (rc {proc.returncode}); damaged file kept: "
        f"{os.path.exists(os.path.join(run_dir, 'checkpoints', 'checkpoint.damaged'))}",
    )

    run_dir, cmd = fresh("tokenizer")
    run_until(cmd, run_dir, half)
    before = checkpoints(run_dir)
    open(os.path.join(run_dir, "tokenizer", "tokenizer.json"), "wb").close()
    proc = run(cmd)
    record(
        "0-byte tokenizer.json",
        one_clear_error(proc) and checkpoints(run_dir) == before,
        (error_lines(proc) or [proc.stderr[-300:]])[0][:160]
        + f"; checkpoints kept: {checkpoints(run_dir) == before}",
    )

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))

    run_dir, cmd = fresh("disk")
    proc = run(cmd, preexec_fn=small_disk)
    clear = one_clear_error(proc)
    detail = (error_lines(proc) or [proc.stderr[-300:]])[0][:160]
    run(cmd)
    record("full disk at checkpoint time", clear and digest(run_dir) == reference, detail)

    run_dir, cmd = fresh("truncated")
    run_until(cmd, run_dir, half)
    newest = checkpoints(run_dir)[-1] if checkpoints(run_dir) else None
    for name in os.listdir(os.path.join(run_dir, "checkpoints")):
        if newest and name.startswith(newest[: -len(".index")] + ".data"):
            with open(os.path.join(run_dir, "checkpoints", name), "r+b") as f:
                f.truncate(16)
    proc = run(cmd)
    record(
        "newest checkpoint truncated",
        digest(run_dir) == reference,
        f"fell back from {newest} (rc {proc.returncode})",
    )

    machine = f"{platform.node()} ({os.cpu_count()} cores), {platform.platform()}"
    lines = [
        "# Training soak (benchmarks/training_soak.py)",
        "",
        f"Machine: {machine}. `debug=fast` shape, {args.steps} steps, a checkpoint every 10, "
        f"dropout 0.1; reference run {seconds:.0f} s, weights sha256 `{reference[:16]}…`.",
        "",
        "| case | ends bit-identical or with one clear error, nothing lost | detail |",
        "|---|---|---|",
    ]
    lines += [f"| {r['case']} | {'yes' if r['ok'] else 'NO'} | {r['detail']} |" for r in rows]
    save_results(
        "training_soak",
        "\n".join(lines),
        {"machine": machine, "reference": reference, "rows": rows},
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
