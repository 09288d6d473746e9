"""Efficiency, measured in one run: int8 and bf16 weights, pruning, mixture-of-experts, and
long-context attention.

    pip install -e ".[bench]"
    python benchmarks/efficiency.py [--sections quant prune moe attention] [--precisions int8 bf16]

A run of some `--sections` replaces those sections of the committed report and JSON and keeps
the others.

Sections (each contender in its own process with 2 threads, so peak RSS is its own):

1. int8 and bf16 against fp32 for SmolLM2-135M-Instruct (`tfllm pretrained pull`) and a tiny
   Llama-style model trained here on WikiText-2: checkpoint bytes on disk, weight bytes, greedy
   decode tokens/s (batch 1, XLA decode loop, median of 3), peak RSS, and WikiText-2 perplexity
   (`../shared/data/wikitext-2/valid.txt`: SmolLM2 on its first `--smollm2-chars` characters;
   the tiny model, trained on the first 90% of the file with a byte tokenizer, on the last 10%).
   int8 is `tfllm quantize` (weight-only: int8 matrices, one scale per output channel); bf16 is
   `tfllm quantize mode=bf16` (every weight and op in bfloat16).
2. Pruning: the tiny model's held-out perplexity against global magnitude sparsity, one-shot
   and after `--finetune-steps` of recovery fine-tuning with the zeros kept.
3. Mixture-of-experts against dense at equal active parameters on tiny Shakespeare
   (experiment=shakespeare_char): the dense GELU MLP (inner 512) against 8 GELU experts of
   inner 256 with top-2 routing (2 x 256 = 512 active), same steps and batches.
4. Attention forward+backward time and peak memory against sequence length (XLA, batch 1,
   128 wide, 4 heads): full causal `mha`, `mha` with a 128-token window (masked dense), and
   `attention=local` (block-sparse, exact 128-token window).

Prints Markdown tables and writes them, the JSON and two plots to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
RESULTS = os.path.join(HERE, "results")
SHARED = os.path.join(HERE, "..", "..", "shared", "data")
WIKITEXT = os.path.join(SHARED, "wikitext-2", "valid.txt")
SHAKESPEARE = os.path.join(SHARED, "tinyshakespeare.txt")
PROMPT = "Write a short story about a robot who learns to paint."


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _threads() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)


def rss_mb() -> float:
    """Resident memory now (Linux), unlike the high-water mark of `peak_rss_mb`."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def dir_bytes(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
    )


# ----- children ---------------------------------------------------------------------------------


def child_quality(a: dict) -> dict:
    """Load a checkpoint; perplexity of a text, greedy decode speed, weight bytes, peak RSS."""
    _threads()
    from tfllm.compression.quantize import weight_bytes
    from tfllm.evaluation.perplexity import perplexity
    from tfllm.generation.decoder import GenerationConfig, Generator
    from tfllm.runs import load_run

    start = time.perf_counter()
    model, tokenizer, _ = load_run(a["ckpt"])
    load_seconds = time.perf_counter() - start
    loaded_rss = rss_mb()
    with open(a["text_path"], encoding="utf-8") as f:
        text = f.read()[a["begin"] : a["end"]]
    start = time.perf_counter()
    ppl = perplexity(model, tokenizer, text, a["window"], a["stride"], batch_size=4)
    ppl_seconds = time.perf_counter() - start
    generator = Generator(model, tokenizer, jit_compile=True)
    prompt = [tokenizer.encode_one(a.get("prompt", PROMPT))]
    config = GenerationConfig(max_new_tokens=a["new_tokens"])
    buf, plens, lens = generator.generate_ids(prompt, config)  # warm-up: trace and compile
    times = []
    for _ in range(3):
        start = time.perf_counter()
        generator.generate_ids(prompt, config)
        times.append(time.perf_counter() - start)
    return {
        "perplexity": ppl.perplexity,
        "tokens_scored": ppl.tokens,
        "perplexity_seconds": ppl_seconds,
        "load_seconds": load_seconds,
        "decode_tokens_per_sec": int(lens[0] - plens[0]) / statistics.median(times),
        "weight_bytes": weight_bytes(model),
        "checkpoint_bytes": dir_bytes(os.path.join(a["ckpt"], "checkpoints")),
        "sample": tokenizer.decode(buf[0, plens[0] : lens[0]].tolist())[:60],
        "rss_after_load_mb": loaded_rss,
        "peak_rss_mb": peak_rss_mb(),
    }


def child_train(a: dict) -> dict:
    """A training run from Hydra overrides; final logs, parameters and tokens/s."""
    _threads()
    from hydra import compose, initialize_config_dir

    from tfllm.config import config_dir, to_plain
    from tfllm.training.trainer import Trainer

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = to_plain(compose("config", overrides=[f"run_dir={a['run_dir']}", *a["overrides"]]))
    cfg.pop("run_dir")
    trainer = Trainer(cfg, a["run_dir"])
    start = time.perf_counter()
    logs = trainer.fit()
    wall = time.perf_counter() - start
    total = sum(int(w.numpy().size) for w in trainer.model.trainable_weights)
    with open(os.path.join(a["run_dir"], "metrics.json")) as f:
        metrics = json.load(f)  # tokens/s excludes the first execution (tracing, compiling)
    return {
        "val_loss": logs["val_loss"],
        "tokens_per_sec": metrics["mean_tokens_per_sec"],
        "wall_seconds": wall,
        "parameters": total,
        "peak_rss_mb": peak_rss_mb(),
    }


def child_prune(a: dict) -> dict:
    """Held-out perplexity against sparsity: one-shot, and after recovery fine-tuning."""
    _threads()
    from tfllm.commands.compress import prune_run
    from tfllm.compression.prune import prune_model, sparsity_of
    from tfllm.evaluation.perplexity import perplexity
    from tfllm.runs import load_run

    with open(a["text_path"], encoding="utf-8") as f:
        text = f.read()[a["begin"] : a["end"]]

    def score(model, tokenizer):
        return perplexity(model, tokenizer, text, a["window"], a["stride"]).perplexity

    rows = []
    for sparsity in a["sparsities"]:
        model, tokenizer, _ = load_run(a["ckpt"])
        if sparsity:
            prune_model(model, sparsity, "global")
        row = {
            "sparsity": sparsity,
            "achieved": sparsity_of(model)[0],
            "one_shot_perplexity": score(model, tokenizer),
        }
        if sparsity in a["finetune"]:
            out = os.path.join(a["work"], f"pruned-{sparsity}")
            prune_run(a["ckpt"], out, sparsity, "global", None, a["finetune_steps"], 3e-4)
            tuned, tokenizer, _ = load_run(out)
            row["finetuned_perplexity"] = score(tuned, tokenizer)
            row["finetuned_achieved"] = sparsity_of(tuned)[0]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"rows": rows}


def child_attention(a: dict) -> dict:
    """Forward+backward of one attention layer at one length (XLA): median seconds, RSS."""
    _threads()
    import keras
    import numpy as np
    import tensorflow as tf

    from tfllm import registry

    layer = registry.build(
        "attention", a["spec"], {"hidden_dim": 128, "num_heads": 4, "causal": True}
    )
    x = tf.constant(np.random.default_rng(0).normal(size=(1, a["length"], 128)), tf.float32)
    layer.build(x.shape)

    @tf.function(jit_compile=True)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x, *layer.trainable_variables])[0]

    keras.utils.set_random_seed(0)
    step(x).numpy()  # compile
    times = []
    for _ in range(a["repeats"]):
        start = time.perf_counter()
        step(x).numpy()
        times.append(time.perf_counter() - start)
    # The step's own memory: the peak of TensorFlow's CPU allocator (which XLA's buffers come
    # from) during one step, above what was allocated before it.
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    step(x).numpy()
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    return {"seconds": statistics.median(times), "step_mb": (peak - before) / 1e6}


CHILDREN = {
    "quality": child_quality,
    "train": child_train,
    "prune": child_prune,
    "attention": child_attention,
}


def run_child(name: str, args: dict, timeout: int = 3600) -> dict:
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, __file__, "--child", name, "--child-args", json.dumps(args)]
    proc = subprocess.run(
        [*cmd, "--out", out], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-2000:]}
    with open(out) as f:
        result = json.load(f)
    os.unlink(out)
    return result


# ----- sections ---------------------------------------------------------------------------------


def section_quantization(args, work: str) -> tuple[dict, list[str]]:
    from tfllm.commands.compress import quantize_run
    from tfllm.pretrained.packages import pull

    size = os.path.getsize(WIKITEXT)
    with open(WIKITEXT, encoding="utf-8") as f:
        chars = len(f.read())
    split = int(chars * 0.9)
    tiny_run = os.path.join(work, "tiny")
    trained = run_child(
        "train",
        {
            "run_dir": tiny_run,
            "overrides": [
                "model=llama_tiny",
                "tokenizer=byte",
                f"data.path={WIKITEXT}",
                "data.sequence_length=128",
                "data.batch_size=16",
                "data.sampling=random",
                f"trainer.max_steps={args.tiny_steps}",
                "trainer.eval_every=500",
                "trainer.checkpoint_every=500",
                "trainer.callbacks=[]",
            ],
        },
    )
    print(f"tiny model trained on WikiText-2 (first 90%): {trained}", flush=True)
    models = {
        "SmolLM2-135M": {
            "ckpt": str(pull("smollm2-135m-instruct")),
            "text": {"begin": 0, "end": args.smollm2_chars, "window": 512, "stride": 256},
        },
        "tiny Llama (byte, 4x128)": {
            "ckpt": tiny_run,
            "text": {"begin": split, "end": chars, "window": 128, "stride": 64},
            "prompt": " The game 's",
        },
    }
    from tfllm.runs import load_run, write_run

    # Bytes on disk compare model weights only: a training run's checkpoint also holds the
    # optimizer's moments, so the tiny run is first written as a model-only checkpoint.
    model, tokenizer, cfg = load_run(tiny_run)
    write_run(model, tokenizer, cfg, os.path.join(work, "tiny-fp32"))
    models["tiny Llama (byte, 4x128)"]["ckpt"] = os.path.join(work, "tiny-fp32")
    del model
    rows = {}
    for name, m in models.items():
        checkpoints, quantize_seconds = {"fp32": m["ckpt"]}, {}
        for precision in args.precisions:
            checkpoints[precision] = os.path.join(work, f"{precision}-{len(rows)}")
            start = time.perf_counter()
            quantize_run(m["ckpt"], checkpoints[precision], mode=precision)
            quantize_seconds[precision] = time.perf_counter() - start
        for precision, ckpt in checkpoints.items():
            child = {
                "ckpt": ckpt,
                "text_path": WIKITEXT,
                "new_tokens": args.new_tokens,
                **m["text"],
                **({"prompt": m["prompt"]} if "prompt" in m else {}),
            }
            result = run_child("quality", child)
            if precision in quantize_seconds:
                result["quantize_seconds"] = quantize_seconds[precision]
            rows[f"{name} {precision}"] = result
            print(name, precision, result, flush=True)
    lines = [
        "| model | precision | checkpoint MB | weight MB | decode tok/s | RSS after load MB | "
        "peak RSS MB | WikiText-2 ppl | tokens scored |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in rows.items():
        if "error" in r:
            lines.append(f"| {key} | error: {r['error'][-200:]!r} |")
            continue
        name, precision = key.rsplit(" ", 1)
        lines.append(
            f"| {name} | {precision} | {r['checkpoint_bytes'] / 1e6:.1f} | "
            f"{r['weight_bytes'] / 1e6:.1f} | {r['decode_tokens_per_sec']:.1f} | "
            f"{r['rss_after_load_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['perplexity']:.3f} | "
            f"{r['tokens_scored']:,} |"
        )
    lines.append("")
    for name, precision in itertools.product(models, args.precisions):
        f, q = rows.get(f"{name} fp32", {}), rows.get(f"{name} {precision}", {})
        if "perplexity" in f and "perplexity" in q:
            lines.append(
                f"- {name}: {precision}/fp32 perplexity {q['perplexity'] / f['perplexity']:.4f} "
                f"({100 * (q['perplexity'] / f['perplexity'] - 1):+.2f}%), checkpoint bytes "
                f"{f['checkpoint_bytes'] / q['checkpoint_bytes']:.2f}x smaller, weight bytes "
                f"{f['weight_bytes'] / q['weight_bytes']:.2f}x smaller, decode "
                f"{q['decode_tokens_per_sec'] / f['decode_tokens_per_sec']:.2f}x, peak RSS "
                f"{q['peak_rss_mb'] / f['peak_rss_mb']:.2f}x (quantizing took "
                f"{q['quantize_seconds']:.1f} s)"
            )
    lines.append(
        "- Loading an int8 checkpoint builds the float model, quantizes it and then restores "
        "the int8 values, so its peak RSS includes the float weights once; RSS after load is "
        "what the loaded model holds. A bf16 checkpoint is built in bfloat16 directly."
    )
    lines.append(
        f"- WikiText-2 valid.txt ({size:,} bytes): SmolLM2 scores its first "
        f"{args.smollm2_chars:,} characters (window 512, stride 256); the tiny model, trained "
        f"{args.tiny_steps} steps on the first 90%, scores the last 10% (window 128, stride 64)."
    )
    return {
        "tiny_training": trained,
        "rows": rows,
        "tiny_run": tiny_run,
        "split": split,
        "chars": chars,
    }, lines


def section_pruning(args, work: str, quant: dict) -> tuple[dict, list[str]]:
    sparsities = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    finetune = [0.0, 0.5, 0.7, 0.9]  # 0.0: the dense model fine-tuned alike, for reference
    result = run_child(
        "prune",
        {
            "ckpt": quant["tiny_run"],
            "text_path": WIKITEXT,
            "begin": quant["split"],
            "end": quant["chars"],
            "window": 128,
            "stride": 64,
            "sparsities": sparsities,
            "finetune": finetune,
            "finetune_steps": args.finetune_steps,
            "work": work,
        },
    )
    lines = [
        "| sparsity (global) | achieved | one-shot ppl | fine-tuned ppl |",
        "|---|---|---|---|",
    ]
    for r in result.get("rows", []):
        tuned = r.get("finetuned_perplexity")
        lines.append(
            f"| {r['sparsity']:.1f} | {r['achieved']:.3f} | {r['one_shot_perplexity']:.3f} | "
            + (f"{tuned:.3f} (sparsity kept {r['finetuned_achieved']:.3f})" if tuned else "")
            + " |"
        )
    if "error" in result:
        lines.append(f"error: {result['error'][-400:]!r}")
    lines.append(
        f"\nTiny Llama (byte, WikiText-2, last 10% held out); targets: every dense kernel "
        f"(embeddings and norms stay dense). Fine-tuning: {args.finetune_steps} steps at a "
        "constant 3e-4 on the training 90%, gradients of pruned weights masked; the 0.0 row's "
        "fine-tuned value is the dense model trained the same extra steps."
    )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = result["rows"]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(
            [r["sparsity"] for r in rows],
            [r["one_shot_perplexity"] for r in rows],
            "o-",
            label="one-shot",
        )
        tuned = [r for r in rows if "finetuned_perplexity" in r]
        ax.plot(
            [r["sparsity"] for r in tuned],
            [r["finetuned_perplexity"] for r in tuned],
            "s-",
            label=f"+ {args.finetune_steps} fine-tuning steps",
        )
        ax.set_xlabel("global magnitude sparsity of dense kernels")
        ax.set_ylabel("held-out WikiText-2 perplexity (bytes)")
        ax.set_yscale("log")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(RESULTS, "efficiency_pruning.png"), dpi=120)
    except (ImportError, KeyError) as e:
        lines.append(f"(no plot: {e})")
    return result, lines


def section_moe(args, work: str) -> tuple[dict, list[str]]:
    common = [
        "experiment=shakespeare_char",
        f"data.path={SHAKESPEARE}",
        f"trainer.max_steps={args.moe_steps}",
        "trainer.callbacks=[]",
    ]
    runs = {
        "dense MLP (inner 512)": [*common, "ffn=mlp_nobias"],
        "MoE 8 experts top-2 (inner 256 each)": [
            *common,
            "ffn=moe",
            "ffn.expert=mlp",
            "ffn.activation=gelu",
            "+ffn.intermediate_dim=256",
            "ffn.num_experts=8",
            "ffn.top_k=2",
        ],
    }
    rows = {}
    for name, overrides in runs.items():
        rows[name] = run_child(
            "train", {"run_dir": os.path.join(work, f"moe-{len(rows)}"), "overrides": overrides}
        )
        print(name, rows[name], flush=True)
    # Active parameters: the dense FFN's; the MoE's top-2 of 8 experts plus its router.
    d, layers = 128, 4
    lines = [
        "| model | parameters | active per token | val loss | tokens/s | wall s | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error'][-200:]!r} |")
            continue
        moe = name.startswith("MoE")
        active = r["parameters"] - (layers * 6 * 2 * d * 256 if moe else 0)
        lines.append(
            f"| {name} | {r['parameters']:,} | {active:,} | {r['val_loss']:.4f} | "
            f"{r['tokens_per_sec']:,.0f} | {r['wall_seconds']:.0f} | {r['peak_rss_mb']:.0f} |"
        )
    lines.append(
        f"\nexperiment=shakespeare_char (4x128, block 64, batch 12), {args.moe_steps} steps, "
        "identical batches; active = parameters a token passes through (the MoE's 2 of 8 "
        "experts + router). MoE adds its load-balancing loss (weight 0.01) in training."
    )
    return rows, lines


def section_attention(args) -> tuple[dict, list[str]]:
    variants = {
        "mha (full causal)": {"name": "mha"},
        "mha window=128 (masked dense)": {"name": "mha", "window": 128},
        "local window=128 (block-sparse)": {
            "name": "block_sparse",
            "block_size": 128,
            "local_blocks": 1,
            "window": 128,
        },
    }
    rows: dict[str, dict] = {}
    for name, spec in variants.items():
        for length in args.lengths:
            dense = spec["name"] == "mha"
            if dense and length > args.max_dense_length:
                continue
            r = run_child("attention", {"spec": spec, "length": length, "repeats": args.repeats})
            rows[f"{name}|{length}"] = r
            print(name, length, r, flush=True)
    lines = ["| attention | " + " | ".join(f"T={t}" for t in args.lengths) + " |"]
    lines.append("|---|" + "---|" * len(args.lengths))
    for what, fmt in (
        ("ms", lambda r: f"{1000 * r['seconds']:.1f}"),
        ("MB", lambda r: f"{r['step_mb']:.0f}"),
    ):
        for name in variants:
            cells = []
            for t in args.lengths:
                r = rows.get(f"{name}|{t}")
                cells.append("-" if r is None else ("error" if "error" in r else fmt(r)))
            lines.append(f"| {name} ({what}) | " + " | ".join(cells) + " |")
    lines.append(
        "\nOne layer, batch 1, 128 wide, 4 heads, forward + backward under XLA, median of "
        f"{args.repeats}; MB = peak of TensorFlow's CPU allocator (XLA's buffers) during one "
        f"step above what was allocated before it. Dense variants stop at "
        f"T={args.max_dense_length}."
    )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for name in variants:
            pts = [
                (t, rows[f"{name}|{t}"])
                for t in args.lengths
                if f"{name}|{t}" in rows and "error" not in rows[f"{name}|{t}"]
            ]
            axes[0].plot(
                [t for t, _ in pts], [1000 * r["seconds"] for _, r in pts], "o-", label=name
            )
            axes[1].plot(
                [t for t, _ in pts],
                [r["step_mb"] for _, r in pts],
                "o-",
                label=name,
            )
        for ax, label in zip(axes, ("ms (fwd + bwd)", "MB allocated by one step"), strict=True):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(RESULTS, "efficiency_attention.png"), dpi=120)
    except ImportError as e:
        lines.append(f"(no plot: {e})")
    return rows, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=sorted(CHILDREN))
    parser.add_argument("--child-args")
    parser.add_argument("--out")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument(
        "--precisions", nargs="+", default=["int8", "bf16"], choices=["int8", "bf16"]
    )
    parser.add_argument("--smollm2-chars", type=int, default=40_000)
    parser.add_argument("--tiny-steps", type=int, default=1500)
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--moe-steps", type=int, default=2000)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument(
        "--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384]
    )
    parser.add_argument("--max-dense-length", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.child:
        with open(args.out, "w") as f:
            json.dump(CHILDREN[args.child](json.loads(args.child_args)), f)
        return
    os.makedirs(RESULTS, exist_ok=True)
    work = tempfile.mkdtemp(prefix="tfllm-efficiency-")
    started = time.perf_counter()
    command = f"`python benchmarks/efficiency.py {' '.join(sys.argv[1:])}`".replace(" `", "`")
    machine = (
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; each contender in its own process with 2 threads."
    )
    results: dict = {}
    sections: dict[str, list[str]] = {}  # "## title" -> its lines
    quant = None
    if "quant" in args.sections or "prune" in args.sections:
        quant, lines = section_quantization(args, work)
        results["quantization"] = quant
        sections[QUANT_TITLE] = lines
    if "prune" in args.sections:
        results["pruning"], lines = section_pruning(args, work, quant)
        sections["## Magnitude pruning"] = [*lines, "", "![](efficiency_pruning.png)"]
    if "moe" in args.sections:
        results["moe"], lines = section_moe(args, work)
        sections["## Mixture-of-experts against dense, equal active parameters"] = lines
    if "attention" in args.sections:
        results["attention"], lines = section_attention(args)
        sections["## Attention time and memory against sequence length"] = [
            *lines,
            "",
            "![](efficiency_attention.png)",
        ]
    seconds = time.perf_counter() - started
    for title in sections:
        sections[title] += ["", f"{machine} This section: {command}, total {seconds:.0f} s."]
    report_path = os.path.join(RESULTS, "efficiency.md")
    json_path = os.path.join(RESULTS, "efficiency.json")
    # A run of some sections replaces those and keeps the committed others.
    partial = set(args.sections) != set(SECTIONS)
    kept = _sections(report_path) if partial else {}
    kept.update(sections)
    parts = [REPORT_TITLE, "\n".join(kept.pop("", []))]
    parts += ["\n".join([t, "", *lines]) for t, lines in kept.items()]
    text = "\n\n".join(p for p in parts if p)
    print(text)
    with open(report_path, "w") as f:
        f.write(text.rstrip() + "\n")
    if partial and os.path.exists(json_path):
        with open(json_path) as f:
            results = {**json.load(f), **results}
    with open(json_path, "w") as f:
        json.dump(results, f, indent=1, default=str)
    shutil.rmtree(work, ignore_errors=True)


SECTIONS = ("quant", "prune", "moe", "attention")
REPORT_TITLE = "# Efficiency: int8 and bf16, pruning, mixture-of-experts, long-context attention"
QUANT_TITLE = "## int8 and bf16 against fp32"


def _sections(path: str) -> dict[str, list[str]]:
    """The `## ` sections of a committed report, in order (the int8-only title renamed)."""
    if not os.path.exists(path):
        return {}
    # "" holds the lines between the report's title and its first section.
    sections: dict[str, list[str]] = {"": []}
    title = ""
    with open(path, encoding="utf-8") as f:
        for line in f.read().splitlines()[1:]:
            if line.startswith("## "):
                title = QUANT_TITLE if line == "## int8 against fp32" else line
                sections[title] = []
            else:
                sections[title].append(line)
    return {t: _strip(lines) for t, lines in sections.items()}


def _strip(lines: list[str]) -> list[str]:
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


if __name__ == "__main__":
    main()
