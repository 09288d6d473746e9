"""Prepared data at scale: preparation speed against Hugging Face `datasets.map`, and training
throughput and peak memory from 20 MB, 200 MB and 2 GB prepared datasets.

    python benchmarks/data_scale.py [--work /tmp/data_scale] [--gb 2.0] [--steps 300]

The corpus is generated here (nothing committed): paragraphs of pseudo-words drawn from a
Zipf distribution over a 5,000-word vocabulary, in 20 MB text files, so that a character
tokenizer has a realistic alphabet and documents (`documents=paragraphs`) a realistic size.

1. **Preparation, side by side** on the same 200 MB (10 files), same tokenizer (tfllm's `char`,
   trained by `tfllm data prepare` on the first 16 MB, then reused), same cores (2 processes):
   `tfllm data prepare` against `datasets.load_dataset("text", sample_by="paragraph")` +
   `Dataset.map(batched=True, num_proc=2)` calling the same tokenizer, whose arrow files are
   the tokenized result (timed separately: load, map). Contenders alternate over `--rounds`.
2. **Preparation of the whole corpus** (≥ 2 GB) with `tfllm data prepare`.
3. **Training**, nanoGPT's shakespeare_char shape (4 layers × 128, block 64, batch 12), `--steps`
   steps, random windows, each in a fresh `tfllm train` process: from the 20 MB, 200 MB and
   full prepared datasets, and the in-memory `data=text` path on the same 20 MB of text.
   Reported: tokens/s after the first execution (`mean_tokens_per_sec`), medians over
   `--train-rounds` interleaved rounds, and peak RSS. The tokenizer is passed to every
   preparation as a folder, as a user re-preparing with a run's tokenizer would.

With `--hf-full`, `datasets` load+map also runs on the whole corpus once.

Writes benchmarks/results/data_scale.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# This folder goes last on the path: benchmarks/tokenizers.py must not shadow the `tokenizers`
# package keras-hub imports, and machine.py is imported from here.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [HERE]
from machine import cpu_name  # noqa: E402
from results_file import save_results  # noqa: E402

FILE_MB = 20.0  # --file-mb


def generate(folder: str, total_mb: float, seed: int = 0) -> list[str]:
    import numpy as np

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    weights = 1.0 / np.arange(1, 27) ** 0.9
    words = []
    while len(words) < 5000:
        n = int(rng.integers(1, 10))
        words.append("".join(rng.choice(letters, n, p=weights / weights.sum())))
    vocab = [w.encode() + b" " for w in dict.fromkeys(words)]
    vocab += [b".\n\n", b", ", b".\n"]  # paragraph ends, commas, line ends
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05
    p[-3:] = [1 / 250, 1 / 20, 1 / 40]
    p /= p.sum()
    table = np.array(vocab, dtype=object)
    files = []
    for k in range(int(np.ceil(total_mb / FILE_MB))):
        path = os.path.join(folder, f"part-{k:04d}.txt")
        files.append(path)
        if os.path.exists(path) and os.path.getsize(path) >= FILE_MB * 2**20:
            continue
        with open(path + ".tmp", "wb") as f:
            size = 0
            while size < FILE_MB * 2**20:
                chunk = b"".join(table[rng.choice(len(vocab), 1 << 18, p=p)])
                f.write(chunk)
                size += len(chunk)
            f.write(b".\n")
        os.replace(path + ".tmp", path)
    return files


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, **kw)
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return done


def tfllm_prepare(sources: list[str], out: str, tokenizer: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    run(
        [
            sys.executable,
            "-m",
            "tfllm.cli",
            "data",
            "prepare",
            "source=" + ",".join(sources),
            f"out={out}",
            f"tokenizer={tokenizer}",
            "documents=paragraphs",
            "workers=2",
        ]
    )
    seconds = time.perf_counter() - start
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    return {
        "seconds": seconds,
        "mb": manifest["text_bytes"] / 2**20,
        "tokens": manifest["splits"]["train"]["tokens"] + manifest["splits"]["val"]["tokens"],
    }


HF_MAP = r"""
import json, os, sys, time
import numpy as np
import datasets
datasets.disable_progress_bars()
files, tokenizer_dir, cache = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
TOKENIZER = None

def tokenize(batch):
    global TOKENIZER
    import tensorflow as tf
    if TOKENIZER is None:
        from tfllm.components.tokenizers.base import load_tokenizer
        TOKENIZER = load_tokenizer(tokenizer_dir)
    ragged = TOKENIZER(tf.constant(batch["text"]))
    flat = ragged.flat_values.numpy().astype(np.uint16)
    bounds = np.cumsum(ragged.row_lengths().numpy())[:-1]
    return {"ids": np.split(flat, bounds)}

start = time.perf_counter()
ds = datasets.load_dataset(
    "text", data_files=files, sample_by="paragraph", split="train", cache_dir=cache
)
loaded = time.perf_counter()
out = ds.map(tokenize, batched=True, batch_size=1000, num_proc=2, remove_columns=["text"])
tokens = sum(len(x) for x in out.with_format("numpy")["ids"][:1])  # touch the result
mapped = time.perf_counter()
times = {"load_seconds": loaded - start, "map_seconds": mapped - loaded}
print(json.dumps({**times, "rows": len(out)}))
"""


def hf_map(sources: list[str], tokenizer_dir: str, cache: str) -> dict:
    shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    done = run([sys.executable, "-c", HF_MAP, json.dumps(sources), tokenizer_dir, cache])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["seconds"] = time.perf_counter() - start
    shutil.rmtree(cache, ignore_errors=True)
    return result


def train(data: list[str], run_dir: str, steps: int) -> dict:
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "tfllm.cli",
        "train",
        "experiment=shakespeare_char",
        *data,
        f"run_dir={run_dir}",
        f"trainer.max_steps={steps}",
        f"trainer.eval_every={steps}",
        "trainer.eval_batches=20",
        f"trainer.checkpoint_every={steps}",
        "trainer.callbacks=[]",
        "schedule.warmup_steps=10",
    ]
    run(cmd)
    with open(os.path.join(run_dir, "metrics.json")) as f:
        m = json.load(f)
    return {
        "tokens_per_sec": m["mean_tokens_per_sec"],
        "peak_rss_mb": m["peak_rss_mb"],
        "val_loss": m.get("val_loss"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/data_scale")
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3, help="preparation rounds")
    ap.add_argument("--train-rounds", type=int, default=3, help="training rounds")
    ap.add_argument(
        "--hf-full", action="store_true", help="also run datasets load+map on the whole corpus"
    )
    ap.add_argument("--file-mb", type=float, default=20.0, help="size of each generated file")
    args = ap.parse_args()
    global FILE_MB
    FILE_MB = args.file_mb
    os.makedirs(args.work, exist_ok=True)
    t0 = time.time()
    files = generate(os.path.join(args.work, "corpus"), args.gb * 1024)
    print(
        f"corpus: {len(files)} files, {sum(map(os.path.getsize, files)) / 2**30:.2f} GB "
        f"({time.time() - t0:.0f} s)",
        flush=True,
    )
    small, medium = files[:1], files[:10]
    p = lambda name: os.path.join(args.work, name)  # noqa: E731

    # The tokenizer: trained once (on the first 16 MB), then every contender uses its folder.
    first = tfllm_prepare(small, p("prepared_20mb"), "char")
    tokenizer = os.path.join(p("prepared_20mb"), "tokenizer")
    rows = {"tfllm data prepare": [], "datasets load+map": []}
    hf_parts = []
    for r in range(args.rounds):
        rows["tfllm data prepare"].append(tfllm_prepare(medium, p("prepared_200mb"), tokenizer))
        hf = hf_map(medium, tokenizer, p("hf_cache"))
        hf_parts.append(hf)
        rows["datasets load+map"].append({"seconds": hf["seconds"]})
        print(
            f"round {r}: prepare {rows['tfllm data prepare'][-1]['seconds']:.1f} s, "
            f"datasets {hf['seconds']:.1f} s (load {hf['load_seconds']:.1f}, "
            f"map {hf['map_seconds']:.1f})",
            flush=True,
        )
    medium_mb = rows["tfllm data prepare"][0]["mb"]
    full = tfllm_prepare(files, p("prepared_full"), tokenizer)
    print(f"full: {full['mb']:.0f} MB in {full['seconds']:.0f} s", flush=True)
    hf_full = hf_map(files, tokenizer, p("hf_cache")) if args.hf_full else None
    if hf_full:
        print(f"full, datasets: {hf_full['seconds']:.0f} s", flush=True)

    contenders = {
        "in-memory data=text, 20 MB": ["data=text", f"data.path={small[0]}"],
        "prepared, 20 MB": ["data=prepared", f"data.path={p('prepared_20mb')}"],
        "prepared, 200 MB": ["data=prepared", f"data.path={p('prepared_200mb')}"],
        f"prepared, {full['mb'] / 1024:.1f} GB": [
            "data=prepared",
            f"data.path={p('prepared_full')}",
        ],
    }
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    for r in range(args.train_rounds):  # interleaved: each round runs every contender once
        for name, data in contenders.items():
            runs[name].append(train([*data, "data.sampling=random"], p("run"), args.steps))
            print(r, name, runs[name][-1], flush=True)
    training = {
        name: {
            "tokens_per_sec": statistics.median(x["tokens_per_sec"] for x in rs),
            "tokens_per_sec_all": [x["tokens_per_sec"] for x in rs],
            "peak_rss_mb": max(x["peak_rss_mb"] for x in rs),
            "val_loss": rs[0]["val_loss"],
        }
        for name, rs in runs.items()
    }

    med = lambda xs: statistics.median(xs)  # noqa: E731
    prep = med([x["seconds"] for x in rows["tfllm data prepare"]])
    hf_s = med([x["seconds"] for x in rows["datasets load+map"]])
    hf_map_s = med([x["map_seconds"] for x in hf_parts])
    base = training["in-memory data=text, 20 MB"]
    lines = [
        "# Prepared data at scale",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; `python benchmarks/data_scale.py --gb {args.gb} --steps "
        f"{args.steps} --rounds {args.rounds} --train-rounds {args.train_rounds}"
        + (" --hf-full" if args.hf_full else "")
        + f"`; {time.strftime('%Y-%m-%d')}. Run alone on a quiet machine.",
        "",
        "## Preparation: 200 MB of text, char tokenizer, 2 processes, medians of "
        f"{args.rounds} alternating rounds",
        "",
        "| contender | seconds | MB/s | × datasets |",
        "|---|---|---|---|",
        f"| `tfllm data prepare` | {prep:.1f} | {medium_mb / prep:.1f} | {hf_s / prep:.2f} |",
        f"| `datasets` load_dataset + map (num_proc=2) | {hf_s:.1f} | {medium_mb / hf_s:.1f} "
        "| 1.00 |",
        f"| `datasets` map alone | {hf_map_s:.1f} | {medium_mb / hf_map_s:.1f} "
        f"| {hf_s / hf_map_s:.2f} |",
        "",
        f"Whole corpus: {full['mb']:,.0f} MB → {full['tokens']:,} tokens in "
        f"{full['seconds']:.0f} s "
        f"({full['mb'] / full['seconds']:.1f} MB/s)"
        + (
            f"; `datasets` load+map on the same: {hf_full['seconds']:.0f} s "
            f"({full['mb'] / hf_full['seconds']:.1f} MB/s, prepare "
            f"{hf_full['seconds'] / full['seconds']:.2f}× faster)"
            if hf_full
            else ""
        )
        + f". First 20 MB (tokenizer training included): {first['seconds']:.1f} s.",
        "",
        f"## Training: shakespeare_char shape, {args.steps} steps, random windows, medians of "
        f"{args.train_rounds} interleaved rounds (peak RSS: the largest)",
        "",
        "| data | tokens/s | × in-memory | peak RSS MB | val loss |",
        "|---|---|---|---|---|",
    ]
    for name, t in training.items():
        lines.append(
            f"| {name} | {t['tokens_per_sec']:,.0f} "
            f"| {t['tokens_per_sec'] / base['tokens_per_sec']:.3f} "
            f"| {t['peak_rss_mb']:,.0f} | "
            + (f"{t['val_loss']:.3f} |" if t["val_loss"] is not None else "– |")
        )
    rss = [t["peak_rss_mb"] for n, t in training.items() if n.startswith("prepared")]
    lines += [
        "",
        f"Peak RSS across the prepared sizes: {min(rss):,.0f}–{max(rss):,.0f} MB "
        f"(spread {100 * (max(rss) - min(rss)) / min(rss):.1f}%).",
    ]
    save_results(
        "data_scale",
        "\n".join(lines),
        {
            "preparation": rows,
            "datasets": hf_parts,
            "full": full,
            "first": first,
            "training": training,
            "datasets_full": hf_full,
            "args": vars(args),
        },
    )


if __name__ == "__main__":
    main()
