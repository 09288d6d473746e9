"""Streaming through the OpenAI API: time to the first text against the whole reply.

    pip install -e ".[test]"   # the openai SDK
    tfllm pretrained pull smollm2-135m-instruct
    python benchmarks/streaming.py [--rounds 5] [--max-tokens 64]

SmolLM2-135M-Instruct is exported (graph mode, as TF Serving runs it) and served by `tfllm serve`
with the OpenAI API on 127.0.0.1; the official `openai` SDK asks the same chat questions with
`stream=True` and `stream=False`, greedy, interleaved round by round. For each it reports the
seconds to the first piece of text (streamed) and to the whole reply, medians over the rounds and
questions, and checks that the streamed pieces join to the non-streamed reply.

The server decodes a streamed reply in pieces of 1, 4, 16 and 64 tokens, each re-reading the ids
so far (`tfllm.serving.openai_stream`), so the first text comes after one token while the whole
reply costs a few prompt passes more than one `generate` call: the table shows both.

Prints a Markdown table and writes it (and JSON) to benchmarks/results/streaming.*.
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
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [HERE]
from results_file import save_results  # noqa: E402

QUESTIONS = [
    "What is the capital of France?",
    "Name three colours of the rainbow.",
    "Write one sentence about the sea.",
]


def export_smollm2(root: str, limit: int) -> str:
    from tfllm.export.exporter import export_model
    from tfllm.export.serving_module import ExportSettings
    from tfllm.pretrained.packages import pull
    from tfllm.runs import load_run

    model, tokenizer, cfg = load_run(str(pull("smollm2-135m-instruct")))
    settings = ExportSettings(max_new_tokens=limit, max_new_tokens_limit=limit)
    result = export_model(model, tokenizer, cfg, root, "chat", 1, settings, validate=False)
    return os.path.dirname(result.path)


def serve(model_dir: str):
    """`tfllm serve` with the OpenAI API on free ports: `(process, OpenAI port)`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfllm.cli", "serve", f"model_base_path={model_dir}"]
        + ["model_name=chat", "port=0", "rest_port=0", "openai_port=0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1"),
    )
    for line in proc.stdout:
        match = re.search(r"OpenAI API on 127\.0\.0\.1:(\d+)", line)
        if match:
            return proc, int(match[1])
    raise RuntimeError("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    import openai

    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        model_dir = export_smollm2(root, args.max_tokens)
        exported = time.perf_counter() - start
        proc, port = serve(model_dir)
        try:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x")
            ask = dict(model="chat", temperature=0, max_tokens=args.max_tokens)
            for q in QUESTIONS:  # warm-up: the first calls of each signature
                client.chat.completions.create(messages=[{"role": "user", "content": q}], **ask)
                list(
                    client.chat.completions.create(
                        messages=[{"role": "user", "content": q}], stream=True, **ask
                    )
                )
            rows = []
            for r in range(args.rounds):
                for q in QUESTIONS:
                    messages = [{"role": "user", "content": q}]
                    order = ("stream", "whole") if r % 2 == 0 else ("whole", "stream")
                    row = {"question": q, "round": r}
                    for mode in order:
                        t0 = time.perf_counter()
                        if mode == "whole":
                            reply = client.chat.completions.create(messages=messages, **ask)
                            row["whole_s"] = time.perf_counter() - t0
                            row["whole_text"] = reply.choices[0].message.content
                            row["tokens"] = reply.usage.completion_tokens
                            continue
                        text, first = "", None
                        for chunk in client.chat.completions.create(
                            messages=messages, stream=True, **ask
                        ):
                            piece = chunk.choices[0].delta.content if chunk.choices else None
                            if piece and first is None:
                                first = time.perf_counter() - t0
                            text += piece or ""
                        row["stream_s"] = time.perf_counter() - t0
                        row["first_s"] = first
                        row["stream_text"] = text
                    rows.append(row)
                    print(
                        f"round {r} {q!r}: first text {row['first_s']:.2f} s, streamed "
                        f"{row['stream_s']:.2f} s, whole {row['whole_s']:.2f} s, "
                        f"{row['tokens']} tokens",
                        flush=True,
                    )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    same = all(r["stream_text"] == r["whole_text"] for r in rows)

    def median(key):
        return statistics.median(r[key] for r in rows)

    first, streamed, whole = median("first_s"), median("stream_s"), median("whole_s")
    lines = [
        "# Streaming through the OpenAI API: SmolLM2-135M-Instruct, graph-mode export",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (server "
        f"and client share them). {len(QUESTIONS)} chat questions x {args.rounds} rounds, "
        f"greedy, max_tokens {args.max_tokens}, stream and non-stream interleaved; medians. "
        f"Command: `python benchmarks/streaming.py --rounds {args.rounds} --max-tokens "
        f"{args.max_tokens}`",
        "",
        "| request | first text s | whole reply s | × non-streamed reply |",
        "|---|---|---|---|",
        f"| `stream=False` | {whole:.2f} | {whole:.2f} | 1.00 |",
        f"| `stream=True` | {first:.2f} | {streamed:.2f} | {streamed / whole:.2f} |",
        "",
        f"Tokens per reply (median): {median('tokens'):.0f}. The first text arrives after "
        f"{first / whole:.0%} of the non-streamed reply's time; the streamed reply as a whole "
        f"takes {streamed / whole - 1:+.0%}. Streamed text equals the non-streamed reply in every "
        f"request: {'yes' if same else 'NO'}. Export (no validation) took {exported:.0f} s.",
    ]
    save_results("streaming", "\n".join(lines), {"args": vars(args), "rows": rows})
    if not same:
        sys.exit("streamed text differs from the non-streamed reply")


if __name__ == "__main__":
    main()
