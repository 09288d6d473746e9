"""Alignment end to end on this machine: SFT, a reward model, DPO and PPO, with curves.

    pip install -e ".[eval]"
    python benchmarks/alignment.py [--steps 60]

Small models and synthetic tasks, so the whole pipeline runs in minutes on two CPU cores:

1. SFT: a 2-layer 64-wide GPT learns a templated chat task (which fruit has which colour) with
   loss on the assistant's tokens only.
2. Reward model: initialized from the SFT model (as InstructGPT's), it learns from preference
   pairs to prefer replies with more vowels (pair accuracy on held-out pairs).
3. DPO: starting from the SFT model, pairs that prefer a *different* fruit than the one SFT
   taught; the held-out implicit-reward margin and accuracy before and after.
4. PPO: the SFT policy answering the fruit prompts, rewarded (a) by the programmatic vowel
   share and (b) by the reward model of step 2, with the adaptive KL penalty to the SFT model;
   the mean reward and the KL to the reference per step go to a plot.

Writes benchmarks/results/alignment.md, .json and alignment.png.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [HERE]
from results_file import RESULTS, save_results  # noqa: E402

from tfllm.testing.synthetic import (  # noqa: E402
    FRUITS,
    fruit_chats,
    fruit_question,
    other_fruit_pairs,
    write_jsonl,
)

TINY = [
    "model.num_layers=2",
    "model.hidden_dim=64",
    "model.num_heads=4",
    "trainer.jit_compile=false",
    "schedule.warmup_steps=10",
    "schedule.peak_learning_rate=3e-3",
    "trainer.callbacks=[tensorboard]",
]


# Updates from a fine-tuned policy must be small: at SFT's 3e-3 the policy ratio leaves the clip
# range on half the tokens and the policy collapses.
PPO_RATE = ["schedule.peak_learning_rate=3e-4"]


def chats(n: int, seed: int) -> list[dict]:
    """Fruit questions, and one alphabet exchange (so the vocabulary has every letter)."""
    alphabet = [
        {"role": "user", "content": "Spell the alphabet."},
        {"role": "assistant", "content": "abcdefghijklmnopqrstuvwxyz"},
    ]
    return [{"messages": alphabet}, *fruit_chats(n, seed)]


def vowel_pairs(n: int, seed: int) -> list[dict]:
    """Random replies; the one with more vowels is chosen."""
    gen = random.Random(seed)
    out = []
    while len(out) < n:
        color = gen.choice(sorted(FRUITS))
        a, b = ("".join(gen.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6)) for _ in "ab")
        va, vb = (sum(c in "aeiou" for c in s) for s in (a, b))
        if va == vb:
            continue
        chosen, rejected = (a, b) if va > vb else (b, a)
        out.append({"prompt": fruit_question(color), "chosen": chosen, "rejected": rejected})
    return out


def train(overrides: list[str], run_dir: str):
    from tfllm.config import compose
    from tfllm.training.trainer import Trainer

    trainer = Trainer(compose("config", [*overrides, f"run_dir={run_dir}"]), run_dir)
    before = trainer.evaluate()
    t0 = time.perf_counter()
    logs = trainer.fit()
    return trainer, before, logs, time.perf_counter() - t0


def curves(run_dir: str, keys: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    """Scalars the TensorBoard callback wrote under `train/`."""
    import glob

    import tensorflow as tf

    out: dict[str, list[tuple[int, float]]] = {k: [] for k in keys}
    for path in sorted(glob.glob(os.path.join(run_dir, "tensorboard", "events.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                key = value.tag.removeprefix("train/")
                if value.tag.startswith("train/") and key in out:
                    out[key].append((event.step, float(tf.make_ndarray(value.tensor))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="PPO steps per run")
    args = parser.parse_args()
    rows: list[tuple[str, str, str, float]] = []
    record: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        j = lambda name, data: write_jsonl(os.path.join(tmp, name), data)  # noqa: E731
        data = ["data.sequence_length=64", "data.batch_size=8"]
        sft_dir = os.path.join(tmp, "sft")
        sft = [
            "task=sft",
            f"data.train={j('chat.jsonl', chats(400, 0))}",
            f"data.val={j('chat_val.jsonl', chats(40, 1))}",
            "trainer.max_steps=150",
            "trainer.eval_every=150",
            "trainer.checkpoint_every=150",
        ]
        _, before, logs, secs = train([*sft, *data, *TINY], sft_dir)
        rows.append(
            (
                "SFT",
                "val loss (assistant tokens)",
                f"{before['val_loss']:.3f} → {logs['val_loss']:.4f}",
                secs,
            )
        )
        record["sft"] = {"before": before, "after": logs, "seconds": secs}

        rm_dir = os.path.join(tmp, "rm")
        rm = [
            "task=reward",
            f"init_from={sft_dir}",  # InstructGPT: the reward model starts from the SFT model
            f"data.train={j('pairs.jsonl', vowel_pairs(800, 0))}",
            f"data.val={j('pairs_val.jsonl', vowel_pairs(200, 1))}",
            "trainer.max_steps=300",
            "trainer.eval_every=300",
            "trainer.checkpoint_every=300",
        ]
        _, before, logs, secs = train([*rm, *data, *TINY], rm_dir)
        rows.append(
            (
                "Reward model",
                "held-out pair accuracy",
                f"{before['val_pair_accuracy']:.3f} → {logs['val_pair_accuracy']:.3f}",
                secs,
            )
        )
        record["reward_model"] = {"before": before, "after": logs, "seconds": secs}

        dpo = [
            "task=dpo",
            f"init_from={sft_dir}",
            f"data.train={j('dpo.jsonl', other_fruit_pairs(200, 0))}",
            f"data.val={j('dpo_val.jsonl', other_fruit_pairs(40, 1))}",
            "trainer.max_steps=60",
            "trainer.eval_every=60",
            "trainer.checkpoint_every=60",
            "trainer.jit_compile=false",
            "schedule.warmup_steps=5",
            "schedule.peak_learning_rate=1e-3",
            "trainer.callbacks=[tensorboard]",
        ]
        _, before, logs, secs = train([*dpo, *data], os.path.join(tmp, "dpo"))
        rows.append(
            (
                "DPO",
                "held-out margin β·Δlog-ratio (accuracy)",
                f"{before['val_reward_margin']:.3f} ({before['val_reward_accuracy']:.2f}) → "
                f"{logs['val_reward_margin']:.3f} ({logs['val_reward_accuracy']:.2f})",
                secs,
            )
        )
        record["dpo"] = {"before": before, "after": logs, "seconds": secs}

        prompts = [{"prompt": fruit_question(c)} for c in sorted(FRUITS)]
        ppo_common = [
            "task=ppo",
            f"init_from={sft_dir}",
            f"data.train={j('prompts.jsonl', prompts * 4)}",
            f"data.val={j('prompts_val.jsonl', prompts * 2)}",
            "task.max_new_tokens=8",
            "task.target_kl=4.0",
            "task.kl_coef=0.2",
            "task.kl_horizon=100",  # short runs: let the controller act within them
            f"trainer.max_steps={args.steps}",
            "trainer.log_every=2",
            "trainer.steps_per_execution=2",
            f"trainer.eval_every={args.steps}",
            "trainer.eval_batches=null",
            f"trainer.checkpoint_every={args.steps}",
        ]
        plots = {}
        for label, reward in (
            ("vowel share (programmatic)", "{name: token_frequency, target: aeiou}"),
            ("reward model", f"{{name: reward_model, path: '{rm_dir}'}}"),
        ):
            run_dir = os.path.join(tmp, "ppo_" + label.split()[0])
            _, before, logs, secs = train(
                [*ppo_common, f"task.reward={reward}", *data, *TINY, *PPO_RATE], run_dir
            )
            rows.append(
                (
                    f"PPO, reward: {label}",
                    "held-out mean reward (KL to reference)",
                    f"{before['val_reward']:.3f} ({before['val_kl']:.2f}) → "
                    f"{logs['val_reward']:.3f} ({logs['val_kl']:.2f})",
                    secs,
                )
            )
            record[f"ppo_{label}"] = {"before": before, "after": logs, "seconds": secs}
            plots[label] = curves(run_dir, ("reward", "kl", "kl_coef"))
            record[f"ppo_{label}"]["curves"] = plots[label]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, series in plots.items():
        for ax, key in zip(axes, ("reward", "kl"), strict=True):
            steps, values = zip(*series[key], strict=True) if series[key] else ((), ())
            ax.plot(steps, values, label=label)
    axes[0].set(title="PPO: mean reward of the rollouts", xlabel="step", ylabel="reward")
    axes[1].set(title="PPO: KL to the reference (per reply)", xlabel="step", ylabel="KL")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(RESULTS, exist_ok=True)
    fig.savefig(os.path.join(RESULTS, "alignment.png"), dpi=110)

    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores"
    lines = [
        "# Alignment",
        "",
        f"Machine: {machine}. Tiny models (2 layers, 64 wide, characters) on synthetic tasks; "
        "before → after training. Curves: `alignment.png`.",
        "",
        "| stage | measure | before → after | train wall s |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d:.0f} |" for a, b, c, d in rows],
        "",
        f"Command: `python benchmarks/alignment.py --steps {args.steps}`",
    ]
    save_results("alignment", "\n".join(lines), {"machine": machine, **record}, default=float)


if __name__ == "__main__":
    main()
