"""Every shipped config option composes, validates and builds (no YAML rots)."""

import copy
import os

import pytest
from hydra import compose, initialize_config_dir

from tfllm import registry
from tfllm.commands.catalog import CatalogComponents, catalog_from_registry
from tfllm.config import config_dir, to_plain
from tfllm.models.builder import build_model, build_tokenizer
from tfllm.training.validation import validate_train_config

CONF = config_dir()
GROUPS = sorted(
    d for d in os.listdir(CONF) if os.path.isdir(os.path.join(CONF, d)) and not d.startswith("_")
)
OPTIONS = [
    (g, f[:-5])
    for g in GROUPS
    for f in sorted(os.listdir(os.path.join(CONF, g)))
    if f.endswith(".yaml")
]


def composed(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=["run_dir=x", *overrides])
    plain = to_plain(cfg)
    plain.pop("run_dir")
    return plain


# Options that only make sense with a task, composed with it.
CLASSIFY = ["task=classify", "data.train=train.tsv", "data.val=val.tsv"]
COMPANIONS = {
    ("data", "tsv_classification"): CLASSIFY,
    ("head", "classification"): CLASSIFY,
    ("task", "classify"): CLASSIFY[1:],
    ("task", "masked_lm"): ["model=encoder", "tokenizer=char_mlm"],
}
PAIRS = ["data.train=train.tsv", "data.val=val.tsv"]
SEQ2SEQ = ["model=t5_tiny", "task=seq2seq", *PAIRS]
TAGGING = ["task=token_classify", *PAIRS]
QA = ["task=extractive_qa", *PAIRS]
COMPANIONS.update(
    {
        ("data", "tsv_seq2seq"): SEQ2SEQ,
        ("task", "seq2seq"): SEQ2SEQ,
        ("task", "span_corruption"): ["model=t5_tiny"],
        ("model", "encoder_decoder"): ["task=span_corruption"],
        ("model", "t5_tiny"): ["task=span_corruption"],
        ("model", "t5_small"): ["task=span_corruption"],
        ("data", "conll"): TAGGING,
        ("head", "token_classification"): TAGGING,
        ("task", "token_classify"): TAGGING,
        ("data", "squad"): QA,
        ("head", "span"): QA,
        ("task", "extractive_qa"): QA,
        ("task", "sft"): ["task=sft", *PAIRS],
        ("data", "chat"): ["task=sft", *PAIRS],
        ("task", "reward"): ["task=reward", *PAIRS],
        ("head", "scalar"): ["task=reward", *PAIRS],
        ("data", "preferences"): ["task=dpo", *PAIRS],
        ("task", "dpo"): ["task=dpo", *PAIRS],
        ("task", "ppo"): ["task=ppo", *PAIRS],
        ("data", "prompts"): ["task=ppo", *PAIRS],
    }
)


# Config groups that mirror a registry kind: each option names a registered component.
MIRRORED = ("tokenizer", "positional", "ffn", "norm", "head", "task", "optimizer", "schedule")


@pytest.fixture(scope="module")
def catalog():
    return CatalogComponents(catalog_from_registry())


@pytest.mark.parametrize("group,option", OPTIONS)
def test_every_option_composes_validates_and_builds(group, option, catalog):
    extra = COMPANIONS.get((group, option), [])
    plain = composed(f"{group}={option}", *extra)
    # `tfllm train`'s check before TensorFlow loads passes it too, to the same typed config.
    early = validate_train_config(copy.deepcopy(plain), catalog)
    cfg = validate_train_config(plain)
    assert early == cfg
    if group in MIRRORED:  # each option of a group that mirrors a registry kind names an entry
        registry.get_entry(group, cfg[group]["name"])
    tokenizer = build_tokenizer(cfg)
    assert isinstance(tokenizer, registry.get("tokenizer", cfg["tokenizer"]["name"]))
    model = build_model(cfg, vocabulary_size=50, sentinel_ids=list(range(40, 50)))
    assert model.count_params() > 0
    registry.build("schedule", cfg["schedule"])
    for cb in cfg["trainer"]["callbacks"]:
        registry.build("callback", {"name": cb} if isinstance(cb, str) else cb)


def test_shakespeare_char_is_nanogpts_baby_config():
    cfg = composed("experiment=shakespeare_char")
    m, d, t, o, s = (cfg[k] for k in ("model", "data", "trainer", "optimizer", "schedule"))
    assert (m["num_layers"], m["num_heads"], m["hidden_dim"]) == (4, 4, 128)
    assert (d["sequence_length"], d["batch_size"], d["train_fraction"]) == (64, 12, 0.9)
    assert (t["max_steps"], t["clip_norm"], m["dropout"]) == (2000, 1.0, 0.0)
    assert (s["peak_learning_rate"], s["min_learning_rate"], s["warmup_steps"]) == (1e-3, 1e-4, 100)
    assert s["decay_steps"] == 2000 and (o["beta_2"], o["weight_decay"]) == (0.99, 0.1)
    assert cfg["tokenizer"]["name"] == "char"
    assert d["path"].endswith("tinyshakespeare.txt")


def test_the_speedrun_experiment_is_the_measured_recipe():
    """`experiment=shakespeare_char_speedrun` composes to exactly the ablation's `modern + muon
    2e-3, wsd cooldown to 0` variant (benchmarks/shakespeare_char.py) with an untied head,
    windows read in shuffled epochs, a cooldown over the last half, SwiGLU 366 wide and
    NorMuon's neuron-wise normalization with each attention head orthogonalized on its own,
    whose three-seed results its comment cites, but for Muon orthogonalizing fused kernels by
    parts (`speedrun, Muon per fused part`): that row was measured with them whole."""
    speedrun = composed("experiment=shakespeare_char_speedrun")
    recipe = [
        "experiment=shakespeare_char",
        "positional=rope",
        "ffn=swiglu",
        "norm=rmsnorm",
        "model.intermediate_dim=344",
        "optimizer=muon",
        "schedule.peak_learning_rate=2e-3",
        "schedule.min_learning_rate=2e-4",
        "optimizer.adam_lr_ratio=0.5",
        "schedule=wsd",
        "schedule.min_learning_rate=0",
        "head.tie_embeddings=false",
        "data.sampling=epochs",
        "schedule.cooldown_fraction=0.5",
        "model.intermediate_dim=366",
        "optimizer.neuron_norm=true",
        "optimizer.per_head=true",
    ]
    assert speedrun == composed(*recipe)
    whole = composed(*recipe, "optimizer.split_fused=false")
    assert speedrun["optimizer"].pop("split_fused") and not whole["optimizer"].pop("split_fused")
    assert speedrun == whole
    assert speedrun["optimizer"]["name"] == "muon" and speedrun["trainer"]["max_steps"] == 2000
