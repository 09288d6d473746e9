"""Safety filters: pattern and classifier filters, and the `flagged` output of exports."""

import numpy as np
import pytest
import tensorflow as tf

from tfllm import registry
from tfllm.components.safety.base import build_safety_filter
from tfllm.registry import ConfigError

TEXTS = [
    "A quiet evening.",
    "Well, DARN it all.",
    "darning socks is fine",  # not the whole word
    "call 555-0100 now",
    "darn, darn and 555-0199",
    "",
]


def test_pattern_filter_actions_and_whole_words():
    flag = build_safety_filter(
        {"name": "patterns", "words": ["darn"], "patterns": [r"\d{3}-\d{4}"]}
    )
    verdicts = flag.verdicts(TEXTS)
    assert [v.flagged for v in verdicts] == [False, True, False, True, True, False]
    assert verdicts[1].reasons == ("DARN",) and verdicts[1].text == TEXTS[1]
    assert verdicts[4].reasons == ("darn", "555-0199")
    redact = registry.build(
        "safety_filter", {"name": "patterns", "words": ["darn"], "action": "redact"}
    )
    assert redact.apply(TEXTS[:3]) == [TEXTS[0], "Well, [redacted] it all.", TEXTS[2]]
    block = registry.build(
        "safety_filter", {"name": "patterns", "words": ["darn"], "action": "block", "message": "-"}
    )
    assert block.apply(TEXTS[:2]) == [TEXTS[0], "-"]


def test_the_graph_flag_agrees_with_python():
    f = build_safety_filter(
        {"name": "patterns", "words": ["darn", "two words"], "patterns": ["x+y"]}
    )
    texts = TEXTS + ["say Two Words", "twowords", "xxxy", "new\nline darn"]
    graph = f.flag_graph(tf.constant(texts)).numpy().tolist()
    assert graph == [v.flagged for v in f.verdicts(texts)]


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"name": "patterns"}, "at least one of words or patterns"),
        ({"name": "patterns", "patterns": ["("]}, "not a valid expression"),
        ({"name": "patterns", "patterns": [r"(a)\1"]}, "not valid in RE2"),
        ({"name": "patterns", "words": ["a"], "action": "shout"}, "action must be one of"),
        ({"name": "patterns", "word": ["a"]}, "takes no argument 'word'"),
        ({"name": "profanity"}, "Unknown safety_filter 'profanity'"),
    ],
)
def test_bad_filters_are_clear_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        build_safety_filter(spec)


@pytest.fixture(scope="module")
def tiny_lm():
    import keras

    from tfllm.components.tokenizers.char import CharTokenizer
    from tfllm.models.decoder import DecoderBackbone
    from tfllm.tasks.causal_lm import CausalLM

    tokenizer = CharTokenizer(special_tokens={"pad": "<pad>", "unk": "<unk>"})
    tokenizer.adapt(["abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,:?!'\n0123456789-"])
    keras.utils.set_random_seed(0)
    backbone = DecoderBackbone(
        vocabulary_size=tokenizer.vocabulary_size,
        num_layers=1,
        hidden_dim=16,
        num_heads=2,
        max_sequence_length=160,
    )
    return CausalLM(backbone), tokenizer


def test_classifier_filter_flags_by_the_judges_label_probability(tiny_lm):
    model, tokenizer = tiny_lm
    spec = {"name": "classifier", "model": model, "tokenizer": tokenizer}
    judge = registry.build("safety_filter", spec)
    texts = ["hello there", "go away now"]
    p = judge.unsafe_probabilities(texts)
    scores = judge.classifier.label_log_likelihoods(texts)
    want = np.exp(scores[:, 1]) / np.exp(scores).sum(axis=1)
    np.testing.assert_allclose(p, want, rtol=1e-6)
    low = registry.build("safety_filter", {**spec, "threshold": float(p.min()) / 2})
    assert all(v.flagged for v in low.verdicts(texts))
    high = registry.build("safety_filter", {**spec, "threshold": (1 + float(p.max())) / 2})
    assert not any(v.flagged for v in high.verdicts(texts))
    with pytest.raises(ConfigError, match="unsafe_label 'toxic'"):
        registry.build("safety_filter", {**spec, "unsafe_label": "toxic"})


def test_an_export_flags_filtered_completions(tiny_lm):
    from tfllm.export.serving_module import CausalLMServing, ExportSettings
    from tfllm.generation.decoder import GenerationConfig, Generator

    model, tokenizer = tiny_lm
    prompts = ["the", "a", "zz"]
    completions = [c[0] for c in Generator(model, tokenizer).generate(prompts, GenerationConfig(8))]
    # Flag whatever the first completion contains, so the test knows the expected answer.
    word = next(w for w in completions[0].split() if w.isalpha()) if completions[0].split() else "q"
    spec = {"name": "patterns", "patterns": [word]}
    module = CausalLMServing(model, tokenizer, ExportSettings(max_new_tokens=8, safety=spec))
    out = module.serving_default(tf.constant(prompts))
    got = [c.decode() for c in out["completions"].numpy()]
    assert got == completions
    expected = [v.flagged for v in build_safety_filter(spec).verdicts(completions)]
    assert out["flagged"].numpy().tolist() == expected and expected[0]
    # redact and block rewrite the completions in the graph as they do in Python.
    for action in ("redact", "block"):
        acting = {**spec, "action": action, "redaction": "[x]"}
        module = CausalLMServing(model, tokenizer, ExportSettings(max_new_tokens=8, safety=acting))
        out = module.serving_default(tf.constant(prompts))
        want = build_safety_filter(acting).apply(completions)
        assert [c.decode() for c in out["completions"].numpy()] == want, action
        assert want[0] != completions[0] and out["flagged"].numpy().tolist() == expected
    with pytest.raises(ValueError, match="runs only in Python"):
        ExportSettings(safety={"name": "classifier", "ckpt": "x"}).safety_filter()
