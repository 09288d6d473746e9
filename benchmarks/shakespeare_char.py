"""nanoGPT's shakespeare_char baby run: tfllm against keras-hub and a PyTorch GPT-2, one run.

    pip install -e ".[bench]"
    python benchmarks/shakespeare_char.py [--steps 2000] [--repeats 3] [--data PATH]
    python benchmarks/shakespeare_char.py --only tfllm,speedrun,nanogpt --nanogpt PATH \
        --target-loss 1.886 --results-name shakespeare_char_target   # time to a loss
    python benchmarks/shakespeare_char.py --ablation [--append --ablate-only NAMES]

Every contender trains the same shape (4 layers, 4 heads, width 128, block 64, batch 12) on the
same batches in the same order (built by tfllm's TextDataset from the composed
`experiment=shakespeare_char` config, so nanoGPT's random windows), with the same optimizer
(AdamW, beta2 0.99, weight decay 0.1 on matrices, clip 1.0, warmup 100 then cosine 1e-3 to
1e-4), and is evaluated on every validation block. Each runs in its own process, so peak RSS is
its own.

Repeat r uses seed r for every contender (initial weights and batches), and the contenders'
order rotates from one repeat to the next, so a slow minute of the machine does not fall on one
contender. The table gives each contender's validation loss as mean and spread over the seeds,
and its median tokens/s; the ratios are medians of the per-repeat ratios. For the tfllm rows it
also gives nanoGPT's own estimator of the validation loss (the mean over 20 batches of 12 random
windows, as `estimate_loss` with `--eval_iters=20` computes it): its mean and 5-95% range over
many draws, which is the spread of the single number nanoGPT prints.
Prints Markdown tables and writes them (and JSON) to benchmarks/results/.

Contenders:
- tfllm: `tfllm train experiment=shakespeare_char` (the real CLI), XLA train step.
- tfllm rope+swiglu+rmsnorm: the stretch variant at the same parameter count.
- keras-hub: `GPT2Backbone` + tied head, `model.fit(jit_compile=True)`.
- pytorch: transformers `GPT2LMHeadModel` (torch CPU, 2 threads).
- speedrun: `tfllm train experiment=shakespeare_char_speedrun` (the modern block and Muon).
- nanoGPT itself, with `--nanogpt PATH` (a local checkout of karpathy/nanoGPT, not a
  dependency): its own prepare.py and train.py, CPU baby settings, float32, no compile.

`--target-loss L` evaluates the tfllm contenders on the whole validation split every
`--eval-every` steps (nanoGPT on as many random batches as the split holds windows) and reports
when each first reached L, in steps and wall seconds from its process start. `--ablation`
trains each recipe change of the speedrun alone on the modern block (ABLATION) over the seeds
and writes results/shakespeare_char_ablation.md.
MFU is model FLOPs (6 N + 12 L T d per token, PaLM appendix B) over a matmul peak measured here.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# Running `python benchmarks/X.py` puts this folder first on sys.path, where this project's
# `tokenizers.py` would shadow Hugging Face `tokenizers` (which keras-hub imports).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [HERE]
from results_file import RESULTS, save_results  # noqa: E402

REPO = os.path.dirname(HERE)
SHAPE = dict(layers=4, heads=4, width=128, block=64, batch=12)
LR, MIN_LR, WARMUP, WD, BETA2, CLIP = 1e-3, 1e-4, 100, 0.1, 0.99, 1.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peer_result(val_loss: float, wall: float, tokens_per_sec: float, params: int) -> dict:
    return {
        "val_loss": val_loss,
        "wall_s": wall,
        "tokens_per_sec": tokens_per_sec,
        "peak_rss_mb": peak_rss_mb(),
        "params": params,
    }


def lr_at(step: int, steps: int) -> float:
    if step < WARMUP:
        return LR * (step + 1) / (WARMUP + 1)
    progress = min(1.0, (step - WARMUP) / (steps - WARMUP))
    return MIN_LR + 0.5 * (1 + math.cos(math.pi * progress)) * (LR - MIN_LR)


# ----- shared data ---------------------------------------------------------------------------
def experiment_overrides(data: str, seed: int, experiment: str = "shakespeare_char") -> list[str]:
    return [f"experiment={experiment}", f"data.path={data}", f"seed={seed}"]


def make_batches(data: str, steps: int, seed: int):
    """The exact batches `tfllm train` makes for this seed, and every validation block."""
    import numpy as np
    import tensorflow as tf

    from tfllm import registry
    from tfllm.config import compose
    from tfllm.models.builder import build_tokenizer

    cfg = compose("config", [*experiment_overrides(data, seed), "run_dir=unused"])
    ds = registry.build("dataset", cfg["data"], key="data")
    train_docs, _ = ds.texts()
    tok = build_tokenizer(cfg)
    tok.adapt(train_docs)
    splits = ds.token_splits(tok)
    ctx = tf.distribute.InputContext(1, 0, 1)
    batches = list(ds.train_dataset(splits.train, ctx, 0, steps))
    train = np.stack([b["token_ids"].numpy() for b in batches])
    labels = np.stack([b["labels"].numpy() for b in batches])
    val_ds, _ = ds.eval_dataset(splits.val, ctx)
    val = [(b["token_ids"].numpy(), b["labels"].numpy()) for b in val_ds]
    return train, labels, val, tok.vocabulary_size


def nanogpt_estimates(model, tokenizer, cfg: dict, draws: int) -> list[float]:
    """nanoGPT's `estimate_loss` on the validation split (20 batches of 12 windows at random
    positions), drawn `draws` times: the spread of the one number nanoGPT reports."""
    import numpy as np
    import tensorflow as tf

    from tfllm import registry

    val = registry.build("dataset", cfg["data"], key="data").token_splits(tokenizer).val
    t, b, iters = SHAPE["block"], SHAPE["batch"], 20
    rng = np.random.default_rng(1234)
    logits_of = tf.function(lambda x: model(x, training=False))
    out = []
    for _ in range(draws):
        starts = rng.integers(0, len(val) - t, size=iters * b)
        windows = val[starts[:, None] + np.arange(t + 1)[None, :]]  # (20 * 12, T + 1)
        logits = logits_of(tf.constant(windows[:, :-1]))
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=windows[:, 1:], logits=logits)
        out.append(float(tf.reduce_mean(ce)))
    return out


def model_flops_per_token(params: int) -> float:
    s = SHAPE
    return 6 * params + 12 * s["layers"] * s["block"] * s["width"]


# ----- contenders ----------------------------------------------------------------------------
def timed_lines(cmd: list[str], cwd: str, stream: str = "stdout") -> tuple[list, float]:
    """Run `cmd`, returning each line of its `stream` with the seconds since the start at
    which it came, and the wall time; the other stream is discarded."""
    other = "stderr" if stream == "stdout" else "stdout"
    with tempfile.TemporaryFile("w+") as kept:  # the other stream, for a failure's message
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, text=True, **{stream: subprocess.PIPE, other: kept})
        lines = [(time.perf_counter() - t0, line) for line in getattr(proc, stream)]
        if proc.wait() != 0:
            kept.seek(0)
            tail = "".join(line for _, line in lines[-10:]) + kept.read()[-3000:]
            sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}")
    return lines, time.perf_counter() - t0


def reached(curve: list[tuple[int, float, float]], target: float | None) -> dict:
    """When the validation curve `(step, val loss, seconds)` first reached `target`."""
    for step, loss, seconds in curve:
        if target is not None and loss <= target:
            return {"target_step": step, "target_s": seconds}
    return {"target_step": None, "target_s": None}


VAL_LINE = re.compile(r"step (\d+)/\d+\s+val_loss ([\d.]+)")


def run_tfllm(args, seed: int, extra: list[str], experiment: str = "shakespeare_char") -> dict:
    """`tfllm train` in its own process; with `--target-loss`, evaluated on the whole
    validation split every `--eval-every` steps, timing when the target is first reached."""
    run_dir = tempfile.mkdtemp(prefix="tfllm-bench-")
    every = args.eval_every if args.target_loss else args.steps
    cmd = [
        sys.executable,
        "-m",
        "tfllm.cli",
        "train",
        *experiment_overrides(args.data, seed, experiment),
        f"run_dir={run_dir}",
        f"trainer.max_steps={args.steps}",
        f"trainer.eval_every={every}",
        f"trainer.log_every={every}",
        f"trainer.checkpoint_every={args.steps}",
        "trainer.callbacks=[progress]",
        f"trainer.steps_per_execution={min(args.spe, every)}",
        *extra,
    ]
    lines, wall = timed_lines(cmd, REPO, "stderr")
    curve = [
        (int(m.group(1)), float(m.group(2)), t) for t, line in lines if (m := VAL_LINE.search(line))
    ]
    with open(os.path.join(run_dir, "metrics.json")) as f:
        m = json.load(f)
    from tfllm.runs import load_run

    model, tokenizer, cfg = load_run(run_dir)
    params = sum(int(v.numpy().size) for v in model.trainable_weights)
    estimates = nanogpt_estimates(model, tokenizer, cfg, args.draws) if args.draws else []
    shutil.rmtree(run_dir, ignore_errors=True)
    return {
        "val_loss": m["val_loss"],
        "steps": args.steps,
        "nanogpt_estimates": estimates,
        "wall_s": wall,
        "tokens_per_sec": m["mean_tokens_per_sec"],
        "peak_rss_mb": m["peak_rss_mb"],
        "params": params,
        "curve": curve,
        **reached(curve, args.target_loss),
    }


NANOGPT_ITER = re.compile(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms")
NANOGPT_VAL = re.compile(r"^step (\d+): train loss [\d.]+, val loss ([\d.]+)")
NANOGPT_PARAMS = re.compile(r"number of parameters: ([\d.]+)M")


def run_nanogpt(args, seed: int) -> dict:
    """nanoGPT itself (a local checkout, `--nanogpt`): its own `prepare.py` on this text and its
    own `train.py` with the CPU baby settings its README gives (eager torch, no compile,
    float32), in a copy of the checkout. nanoGPT seeds with 1337 whatever the repeat, so its
    repeats differ in timing only. Its validation loss is its own estimator (mean over
    `eval_iters` random batches: 20, or with `--target-loss` as many batches as the
    validation split holds windows, about the whole split)."""
    work = tempfile.mkdtemp(prefix="nanogpt-")
    repo = os.path.join(work, "nanoGPT")
    shutil.copytree(args.nanogpt, repo, ignore=shutil.ignore_patterns(".git", "out*"))
    data_dir = os.path.join(repo, "data", "shakespeare_char")
    shutil.copyfile(args.data, os.path.join(data_dir, "input.txt"))  # prepare.py then reads it
    subprocess.run([sys.executable, "prepare.py"], cwd=data_dir, check=True, capture_output=True)
    val_tokens = os.path.getsize(os.path.join(data_dir, "val.bin")) // 2  # uint16
    s = SHAPE
    eval_iters = math.ceil(val_tokens / (s["block"] * s["batch"])) if args.target_loss else 20
    every = args.eval_every if args.target_loss else args.steps
    cmd = [
        sys.executable,
        "train.py",
        "config/train_shakespeare_char.py",
        "--device=cpu",
        "--compile=False",
        "--dtype=float32",
        f"--eval_iters={eval_iters}",
        f"--eval_interval={every}",
        "--log_interval=1",
        f"--block_size={s['block']}",
        f"--batch_size={s['batch']}",
        f"--n_layer={s['layers']}",
        f"--n_head={s['heads']}",
        f"--n_embd={s['width']}",
        f"--max_iters={args.steps}",
        f"--lr_decay_iters={args.steps}",
        "--dropout=0.0",
        f"--out_dir={os.path.join(work, 'out')}",
    ]
    lines, wall = timed_lines(cmd, repo, "stdout")
    shutil.rmtree(work, ignore_errors=True)
    times, curve, params = [], [], 0
    for t, line in lines:
        if m := NANOGPT_ITER.match(line):
            step = int(m.group(1))
            if step >= 50 and step % every:  # after warm-up; not the steps that evaluated
                times.append(float(m.group(2)) / 1000)
        elif m := NANOGPT_VAL.match(line):
            curve.append((int(m.group(1)), float(m.group(2)), t))
        elif m := NANOGPT_PARAMS.search(line):
            params = round(float(m.group(1)) * 1e6)
    return {
        "val_loss": curve[-1][1],
        "wall_s": wall,
        "tokens_per_sec": s["batch"] * s["block"] / statistics.fmean(times),
        "peak_rss_mb": 0.0,
        "params": params,
        "curve": curve,
        **reached(curve, args.target_loss),
    }


def child_keras_hub(args) -> dict:
    import keras
    import keras_hub
    import numpy as np
    import tensorflow as tf

    train, labels, val, vocab = make_batches(args.data, args.steps, args.seed)
    keras.utils.set_random_seed(args.seed)
    s = SHAPE
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=vocab,
        num_layers=s["layers"],
        num_heads=s["heads"],
        hidden_dim=s["width"],
        intermediate_dim=4 * s["width"],
        dropout=0.0,
        max_sequence_length=s["block"],
    )
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)

    class Schedule(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            warm = LR * (step + 1) / (WARMUP + 1)
            prog = tf.clip_by_value((step - WARMUP) / (args.steps - WARMUP), 0.0, 1.0)
            cos = MIN_LR + 0.5 * (1 + tf.cos(math.pi * prog)) * (LR - MIN_LR)
            return tf.where(step < WARMUP, warm, cos)

    opt = keras.optimizers.AdamW(
        Schedule(), weight_decay=WD, beta_1=0.9, beta_2=BETA2, global_clipnorm=CLIP
    )
    opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    lm.compile(
        optimizer=opt,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    x = train.reshape(-1, s["block"])
    y = labels.reshape(-1, s["block"])
    mask = np.ones_like(x)
    inputs = {"token_ids": x, "padding_mask": mask}
    ds = tf.data.Dataset.from_tensor_slices((inputs, y)).batch(s["batch"]).prefetch(2)

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 49:
                self.t0 = time.perf_counter()

    timer = Timer()
    t0 = time.perf_counter()
    lm.fit(ds, epochs=1, verbose=0, callbacks=[timer])
    wall = time.perf_counter() - t0
    timed_steps = args.steps - 50
    tps = timed_steps * s["batch"] * s["block"] / (time.perf_counter() - timer.t0)
    total, count = 0.0, 0
    for vx, vy in val:
        logits = lm({"token_ids": vx, "padding_mask": np.ones_like(vx)}, training=False)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=vy, logits=logits)
        total += float(tf.reduce_sum(ce))
        count += vy.size
    params = sum(int(np.prod(v.shape)) for v in lm.trainable_weights)
    return peer_result(total / count, wall, tps, params)


def child_torch(args) -> dict:
    import numpy as np
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    train, labels, val, vocab = make_batches(args.data, args.steps, args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count() or 2)
    s = SHAPE
    config = GPT2Config(
        vocab_size=vocab,
        n_positions=s["block"],
        n_embd=s["width"],
        n_layer=s["layers"],
        n_head=s["heads"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR,
        betas=(0.9, BETA2),
    )
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    t0 = time.perf_counter()
    t_timed = None
    for step in range(args.steps):
        if step == 50:
            t_timed = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps)
        x = torch.from_numpy(train[step].astype(np.int64))
        y = torch.from_numpy(labels[step].astype(np.int64))
        logits = model(input_ids=x).logits
        loss = loss_fn(logits.reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
    end = time.perf_counter()
    wall = end - t0
    tps = (args.steps - 50) * s["batch"] * s["block"] / (end - t_timed)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for vx, vy in val:
            logits = model(input_ids=torch.from_numpy(vx.astype(np.int64))).logits
            ce = torch.nn.functional.cross_entropy(
                logits.reshape(-1, vocab),
                torch.from_numpy(vy.astype(np.int64)).reshape(-1),
                reduction="sum",
            )
            total += float(ce)
            count += vy.size
    params = sum(p.numel() for p in model.parameters())
    return peer_result(total / count, wall, tps, params)


def child_peak(args) -> dict:
    """fp32 matmul peak: best of TensorFlow and torch on 2048^3, GFLOP/s."""
    import numpy as np
    import tensorflow as tf

    n = 2048
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    mm = tf.function(lambda: tf.matmul(a, b))
    mm()
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        mm().numpy()
        times.append(time.perf_counter() - t0)
    out = {"tf_gflops": 2 * n**3 / float(np.median(times)) / 1e9}
    try:
        import torch

        x, y = torch.randn(n, n), torch.randn(n, n)
        x @ y
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - t0)
        out["torch_gflops"] = 2 * n**3 / float(np.median(times)) / 1e9
    except ImportError:
        pass
    return out


CHILDREN = {"keras_hub": child_keras_hub, "torch": child_torch, "peak": child_peak}


def run_child(name: str, args, seed: int = 0) -> dict:
    out = tempfile.mktemp(suffix=".json")
    cmd = [
        sys.executable,
        __file__,
        "--child",
        name,
        "--out",
        out,
        "--steps",
        str(args.steps),
        "--data",
        args.data,
        "--seed",
        str(seed),
    ]
    subprocess.run(cmd, check=True, cwd=REPO)
    with open(out) as f:
        return json.load(f)


BASE = "tfllm (learned, mlp, layernorm)"
CONTENDERS = {
    "tfllm": BASE,
    "stretch": "tfllm rope+swiglu+rmsnorm",
    "speedrun": "tfllm experiment=shakespeare_char_speedrun",
    "nanogpt": "nanoGPT itself (train.py, torch eager)",
    "keras_hub": "keras-hub GPT2Backbone (fit, XLA)",
    "torch": "transformers GPT2LMHeadModel (torch)",
}
STRETCH = ["positional=rope", "ffn=swiglu", "norm=rmsnorm", "model.intermediate_dim=344"]
SPEEDRUN_LR = [
    "optimizer=muon",
    "schedule.peak_learning_rate=2e-3",
    "schedule.min_learning_rate=2e-4",
    "optimizer.adam_lr_ratio=0.5",
]


# The ablation: each recipe change of the speedrun alone on the modern block, and together.
# Every variant keeps the parameter count (±5% of the recipe's, the bound) and the
# tokens per step. The Muon rows before the last were measured when Muon orthogonalized each
# fused kernel whole; they say so with `optimizer.split_fused=false`, which reproduces them
# exactly.
MODERN = "modern block (rope, swiglu, rmsnorm)"
WHOLE = "optimizer.split_fused=false"
TIED = "head.tie_embeddings=true"
RANDOM = "data.sampling=random"
COOLDOWN_04 = "schedule.cooldown_fraction=0.4"
FFN_344 = "model.intermediate_dim=344"
MUON = "optimizer.neuron_norm=false"
PER_PART = "optimizer.per_head=false"
ABLATION = {
    "nanoGPT recipe (learned, gelu mlp, layernorm)": [],
    MODERN: STRETCH,
    "modern + muon": [*STRETCH, "optimizer=muon", WHOLE],
    "modern + qk_norm": [*STRETCH, "attention=qk_norm"],
    "modern, relu2 mlp instead of swiglu": [
        *STRETCH,
        "ffn=mlp_relu2",
        "model.intermediate_dim=512",
    ],
    "modern + logit softcap 15": [*STRETCH, "head.softcap=15"],
    # Muon's learning rate, AdamW's part kept at the recipe's 1e-3 (adam_lr_ratio).
    "modern + muon, lr 2e-3 (AdamW's part 1e-3)": [*STRETCH, *SPEEDRUN_LR, WHOLE],
    "modern + muon, lr 4e-3 (AdamW's part 1e-3)": [
        *STRETCH,
        "optimizer=muon",
        "schedule.peak_learning_rate=4e-3",
        "schedule.min_learning_rate=4e-4",
        "optimizer.adam_lr_ratio=0.25",
        WHOLE,
    ],
    # The speedruns' trapezoid schedule in place of the cosine, cooling down to 0.
    "modern + muon 2e-3, wsd cooldown to 0": [
        *STRETCH,
        *SPEEDRUN_LR,
        "schedule=wsd",
        "schedule.min_learning_rate=0",
        WHOLE,
    ],
    # The speedrun experiment as it grew, each row one change on the row before: q, k, v and
    # gate, up orthogonalized apart; the untied head; training windows read in shuffled epochs
    # instead of at random positions; the cooldown over the last half of the steps instead of
    # 40%; SwiGLU 366 wide instead of 344; NorMuon's neuron-wise normalization; each attention
    # head on its own (the experiment now). The overrides give back what each row measured.
    "speedrun, Muon per fused part": [
        "experiment=shakespeare_char_speedrun",
        TIED,
        RANDOM,
        COOLDOWN_04,
        FFN_344,
        MUON,
        PER_PART,
    ],
    "speedrun, untied head": [
        "experiment=shakespeare_char_speedrun",
        RANDOM,
        COOLDOWN_04,
        FFN_344,
        MUON,
        PER_PART,
    ],
    "speedrun, epochs of windows": [
        "experiment=shakespeare_char_speedrun",
        COOLDOWN_04,
        FFN_344,
        MUON,
        PER_PART,
    ],
    "speedrun, cooldown over half": [
        "experiment=shakespeare_char_speedrun",
        FFN_344,
        MUON,
        PER_PART,
    ],
    "speedrun, FFN 366 wide": ["experiment=shakespeare_char_speedrun", MUON, PER_PART],
    "speedrun, NorMuon": ["experiment=shakespeare_char_speedrun", PER_PART],
    "speedrun, NorMuon per head": ["experiment=shakespeare_char_speedrun"],
}
SPEEDRUN_NOTE = (
    "`experiment=shakespeare_char_speedrun` is the `speedrun, NorMuon per head` row: the "
    "`modern + muon 2e-3, wsd cooldown to 0` row (the changes that lowered the loss on every "
    "seed, Muon at the best learning rate tried and the trapezoid schedule) with Muon "
    "orthogonalizing q, k, v and gate, up each on its own (`optimizer.split_fused`, the "
    "default; the `speedrun, Muon per fused part` row), an output head of its own "
    "(`head.tie_embeddings=false`, the `speedrun, untied head` row) and training windows read "
    "in shuffled epochs, each window of the text once per epoch, instead of at random "
    "positions (`data.sampling=epochs`, the `speedrun, epochs of windows` row), cooling down "
    "over the last half of the steps (`schedule.cooldown_fraction=0.5`, the `speedrun, "
    "cooldown over half` row), SwiGLU 366 wide instead of 344 (`model.intermediate_dim=366`: "
    "842,880 parameters, 4.8% more than the nanoGPT recipe's 804,480, inside the issue's 5%; "
    "the `speedrun, FFN 366 wide` row), NorMuon's neuron-wise normalization of Muon's "
    "update (`optimizer.neuron_norm=true`, the `speedrun, NorMuon` row) and each attention "
    "head of q, k and v orthogonalized on its own (`optimizer.per_head=true`); "
    "tests/foundation/test_config.py checks they "
    "compose to the same config. Rows with `optimizer.split_fused=false` were measured before "
    "that setting existed, when Muon orthogonalized each fused kernel whole, and rows with "
    "`head.tie_embeddings=true` when the experiment tied its head, rows with "
    "`data.sampling=random` when it sampled windows at random positions (the nanoGPT recipe's "
    "sampling, which the rows without the experiment keep), and rows with "
    "`schedule.cooldown_fraction=0.4` when it cooled down over the last 40%, rows with "
    "`model.intermediate_dim=344` when its SwiGLU was 344 wide, rows with "
    "`optimizer.neuron_norm=false` when its Muon did not normalize per neuron, and rows with "
    "`optimizer.per_head=false` when it orthogonalized q, k and v whole: those overrides "
    "reproduce them exactly."
)


def run_ablation(args) -> None:
    """Validation loss of every ABLATION variant (and `--ablate-extra` ones) over the seeds."""
    variants = dict(ABLATION)
    for extra in args.ablate_extra:
        name, _, overrides = extra.partition("=")
        variants[name] = (
            [*STRETCH, *overrides.split()] if name.startswith("modern") else overrides.split()
        )
    if args.ablate_only:
        variants = {k: v for k, v in variants.items() if k in args.ablate_only.split(";")}
    seeds = list(range(args.repeats))
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    names = list(variants)
    for seed in seeds:
        shift = seed % len(names)
        for name in names[shift:] + names[:shift]:
            chosen = [o for o in variants[name] if o.startswith("experiment=")]
            rest = [o for o in variants[name] if not o.startswith("experiment=")]
            experiment = chosen[-1].split("=", 1)[1] if chosen else "shakespeare_char"
            r = run_tfllm(args, seed, rest, experiment=experiment)
            runs[name].append(r)
            print(
                f"seed {seed} {name}: val loss {r['val_loss']:.4f}, {r['params']:,} params",
                flush=True,
            )
    saved = os.path.join(RESULTS, "shakespeare_char_ablation.json")
    if args.append and os.path.exists(saved):  # earlier variants stay, these are added
        with open(saved) as f:
            earlier = json.load(f)
        if earlier["steps"] != args.steps or earlier["seeds"] != seeds:
            sys.exit("--append: the saved ablation used other steps or seeds")
        variants = {**earlier["variants"], **variants}
        runs = {**earlier["runs"], **runs}
    lines = [
        f"# shakespeare_char recipe ablation, {args.steps} steps, "
        f"seeds {', '.join(map(str, seeds))}",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores. "
        "Batch 12 x 64, 4 layers x 128, 4 heads; every variant trains on the same batches for "
        "a seed; validation loss on every validation block after the last step.",
        "",
        "| variant | overrides | params | val loss, mean ± sd | per seed | vs modern block |",
        "|---|---|---|---|---|---|",
    ]
    base = statistics.fmean(r["val_loss"] for r in runs[MODERN]) if runs.get(MODERN) else None
    for name, rs in runs.items():
        losses = [r["val_loss"] for r in rs]
        mean = statistics.fmean(losses)
        sd = statistics.stdev(losses) if len(losses) > 1 else 0.0
        delta = f"{mean - base:+.4f}" if base is not None else "-"
        overrides = " ".join(variants[name]) or "(experiment=shakespeare_char)"
        lines.append(
            f"| {name} | `{overrides}` | {rs[0]['params']:,} | {mean:.4f} ± {sd:.4f} | "
            f"{', '.join(f'{x:.4f}' for x in losses)} | {delta} |"
        )
    lines += ["", SPEEDRUN_NOTE]
    command = "python benchmarks/shakespeare_char.py " + shlex.join(sys.argv[1:])
    which = (
        f" (the rows this run added; each row is `--ablation --repeats {args.repeats}` with its "
        "overrides, those not in `ABLATION` passed as `--ablate-extra 'NAME=OVERRIDES'`)"
        if args.append
        else ""
    )
    save_results(
        "shakespeare_char_ablation",
        "\n".join(lines) + f"\n\nCommand{which}: `{command}`",
        {"steps": args.steps, "seeds": seeds, "variants": variants, "runs": runs},
    )


def run_contender(key: str, args, seed: int) -> dict:
    if key == "tfllm":
        return run_tfllm(args, seed, [])
    if key == "stretch":
        return run_tfllm(args, seed, STRETCH)
    if key == "speedrun":
        own = argparse.Namespace(**{**vars(args), "steps": args.speedrun_steps or args.steps})
        return run_tfllm(own, seed, [], experiment="shakespeare_char_speedrun")
    if key == "nanogpt":
        return run_nanogpt(args, seed)
    return run_child(key, args, seed)


def steps_of(rs: list[dict], args) -> int:
    """The steps a contender trained (the speedrun's may differ from `--steps`; only tfllm's
    runs record theirs, the peers always train `--steps`)."""
    return rs[0].get("steps", args.steps)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summarize(runs: dict[str, list[dict]], peak_gflops: float) -> dict[str, dict]:
    out = {}
    for name, rs in runs.items():
        losses = [r["val_loss"] for r in rs]
        speeds = [r["tokens_per_sec"] for r in rs]
        params = rs[0]["params"]
        median_speed = statistics.median(speeds)
        estimates = [e for r in rs for e in r.get("nanogpt_estimates", [])]
        out[name] = {
            "params": params,
            "val_loss_mean": statistics.fmean(losses),
            "val_loss_sd": statistics.stdev(losses) if len(losses) > 1 else 0.0,
            "val_loss_min": min(losses),
            "tokens_per_sec_median": median_speed,
            "tokens_per_sec_min": min(speeds),
            "tokens_per_sec_max": max(speeds),
            "wall_s_median": statistics.median(r["wall_s"] for r in rs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
            "mfu": median_speed * model_flops_per_token(params) / (peak_gflops * 1e9),
        }
        hit = [r for r in rs if r.get("target_s") is not None]
        out[name]["target_reached"] = len(hit)
        if hit:
            out[name]["target_s_median"] = statistics.median(r["target_s"] for r in hit)
            out[name]["target_step_median"] = statistics.median(r["target_step"] for r in hit)
        if estimates:
            out[name]["nanogpt_estimate_mean"] = statistics.fmean(estimates)
            out[name]["nanogpt_estimate_p05"] = percentile(estimates, 0.05)
            out[name]["nanogpt_estimate_p95"] = percentile(estimates, 0.95)
            out[name]["nanogpt_estimate_min"] = min(estimates)
    return out


def report(
    args, peak: dict, runs: dict[str, list[dict]], seeds: list[int]
) -> tuple[str, dict[str, dict]]:
    peak_gflops = max(peak.values())
    summary = summarize(runs, peak_gflops)
    n = len(seeds)
    lines = [
        f"# shakespeare_char, {args.steps} steps (batch 12 x 64, 4x128, 4 heads), "
        f"{n} seed{'s' if n > 1 else ''}"
        + (
            f"; the speedrun experiment {args.speedrun_steps} steps"
            if args.speedrun_steps and args.speedrun_steps != args.steps
            else ""
        ),
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}. Matmul peak (fp32, 2048^3): "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()),
        "",
        "| contender | params | val loss, mean ± sd | best seed | nanoGPT estimator, "
        "mean [5%, 95%] | median wall s | median tokens/s [min, max] | MFU | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in summary.items():
        estimator = (
            f"{r['nanogpt_estimate_mean']:.4f} [{r['nanogpt_estimate_p05']:.4f}, "
            f"{r['nanogpt_estimate_p95']:.4f}]"
            if "nanogpt_estimate_mean" in r
            else "-"
        )
        lines.append(
            f"| {name} | {r['params']:,} | {r['val_loss_mean']:.4f} ± {r['val_loss_sd']:.4f} | "
            f"{r['val_loss_min']:.4f} | {estimator} | {r['wall_s_median']:.0f} | "
            f"{r['tokens_per_sec_median']:,.0f} [{r['tokens_per_sec_min']:,.0f}, "
            f"{r['tokens_per_sec_max']:,.0f}] | {r['mfu']:.1%} | {r['peak_rss_mb']:.0f} |"
        )
    if args.target_loss is not None:
        lines += [
            "",
            f"Time to validation loss <= {args.target_loss} (the whole validation split "
            f"evaluated every {args.eval_every} steps, wall seconds from the process start, "
            "evaluations included):",
            "",
            "| contender | reached (of seeds) | median step | median wall s |",
            "|---|---|---|---|",
        ]
        for name, r in summary.items():
            if r["target_reached"]:
                lines.append(
                    f"| {name} | {r['target_reached']} of {n} | {r['target_step_median']:.0f} | "
                    f"{r['target_s_median']:.0f} |"
                )
            else:
                lines.append(
                    f"| {name} | 0 of {n} | not in {steps_of(runs[name], args)} steps | "
                    f"> {r['wall_s_median']:.0f} |"
                )
        if BASE in summary and summary[BASE]["target_reached"]:
            lines.append("")
            for name, r in summary.items():
                if name != BASE and r["target_reached"]:
                    share = r["target_s_median"] / summary[BASE]["target_s_median"]
                    lines.append(
                        f"- {name} reaches {args.target_loss} in {share:.0%} of the wall time "
                        f"{BASE} takes"
                    )
    lines += ["", "Per seed: val loss / tokens/s", ""]
    names = list(runs)
    lines.append("| seed | " + " | ".join(names) + " |")
    lines.append("|---" * (len(names) + 1) + "|")
    for i, seed in enumerate(seeds):
        cells = [
            f"{runs[k][i]['val_loss']:.4f} / {runs[k][i]['tokens_per_sec']:,.0f}" for k in names
        ]
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    if BASE in runs:
        lines.append("")
        for name in names:
            if name == BASE:
                continue
            ratios = [
                a["tokens_per_sec"] / b["tokens_per_sec"]
                for a, b in zip(runs[BASE], runs[name], strict=True)
            ]
            lines.append(
                f"- tfllm tokens/s / {name}: median {statistics.median(ratios):.2f}x "
                f"(per repeat: {', '.join(f'{x:.2f}' for x in ratios)})"
            )
    lines += [
        "",
        "tokens/s excludes the first 50 steps (tracing, compilation) and evaluation. Repeat r "
        "trains every contender with seed r; the order of the contenders rotates each repeat. "
        "The nanoGPT estimator column: "
        f"{args.draws} draws per seed of the mean loss over 20 batches of 12 random validation "
        "windows (nanoGPT `--eval_iters=20`).",
    ]
    return "\n".join(lines), summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3, help="seeds 0 .. repeats-1")
    parser.add_argument(
        "--speedrun-steps",
        type=int,
        default=None,
        help="steps of the speedrun experiment (default --steps): its 2,000-step schedule "
        "beside peers trained for longer, so that they too reach --target-loss",
    )
    parser.add_argument("--draws", type=int, default=100, help="nanoGPT estimator draws")
    parser.add_argument("--spe", type=int, default=50, help="tfllm steps_per_execution")
    parser.add_argument(
        "--data", default=os.path.join(REPO, "..", "shared", "data", "tinyshakespeare.txt")
    )
    parser.add_argument("--only", default="tfllm,stretch,speedrun,keras_hub,torch,nanogpt")
    parser.add_argument(
        "--nanogpt", default=None, help="a local nanoGPT checkout: adds nanoGPT itself as a peer"
    )
    parser.add_argument(
        "--target-loss",
        type=float,
        default=None,
        help="time each contender to this validation loss (nanoGPT's measured 1.886, say)",
    )
    parser.add_argument("--eval-every", type=int, default=250, help="with --target-loss")
    parser.add_argument(
        "--results-name", default="shakespeare_char", help="the table's file name in results/"
    )
    parser.add_argument("--child")
    parser.add_argument("--out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ablation", action="store_true", help="the recipe ablation table")
    parser.add_argument(
        "--ablate-extra",
        action="append",
        default=[],
        help="NAME=OVERRIDES, another ablation variant (a name starting 'modern' adds the "
        "modern block's overrides)",
    )
    parser.add_argument("--ablate-only", default="", help="';'-separated variant names")
    parser.add_argument(
        "--append", action="store_true", help="add to the saved ablation table, not replace it"
    )
    args = parser.parse_args()
    args.data = os.path.abspath(args.data)
    if args.child:
        with open(args.out, "w") as f:
            json.dump(CHILDREN[args.child](args), f)
        return
    if args.ablation:
        args.draws = 0
        run_ablation(args)
        return

    peak = run_child("peak", args)
    wanted = [k for k in CONTENDERS if k in args.only.split(",")]
    if args.nanogpt is None:
        wanted = [k for k in wanted if k != "nanogpt"]
    else:
        args.nanogpt = os.path.abspath(args.nanogpt)
    seeds = list(range(args.repeats))
    runs: dict[str, list[dict]] = {CONTENDERS[k]: [] for k in wanted}
    for seed in seeds:
        shift = seed % len(wanted)
        for key in wanted[shift:] + wanted[:shift]:
            try:
                r = run_contender(key, args, seed)
            except subprocess.CalledProcessError as e:
                sys.exit(f"{CONTENDERS[key]} failed ({e}); install the bench extra")
            runs[CONTENDERS[key]].append(r)
            print(
                f"seed {seed} {CONTENDERS[key]}: val loss {r['val_loss']:.4f}, "
                f"{r['tokens_per_sec']:,.0f} tokens/s",
                flush=True,
            )
    table, summary = report(args, peak, runs, seeds)
    command = "python benchmarks/shakespeare_char.py " + shlex.join(sys.argv[1:])
    save_results(
        args.results_name,
        table + f"\n\nCommand: `{command}`",
        {
            "peak": peak,
            "steps": args.steps,
            "speedrun_steps": args.speedrun_steps or args.steps,
            "seeds": seeds,
            "runs": runs,
            "summary": summary,
        },
    )


if __name__ == "__main__":
    main()
