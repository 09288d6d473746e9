"""Evaluation: perplexity against an independent computation, BLEU by hand, label
likelihoods against the model's own log-probabilities, scaling laws and attention maps."""

import json
import math

import numpy as np
import pytest
from conftest import run_cli

from tfllm.components.tokenizers.char import CharTokenizer
from tfllm.evaluation.bleu import corpus_bleu
from tfllm.evaluation.classification import (
    LabelledText,
    LabelLikelihoodClassifier,
    read_labelled_tsv,
)
from tfllm.evaluation.perplexity import perplexity, window_spans
from tfllm.registry import ConfigError

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer."


@pytest.fixture(scope="module")
def tiny():
    import keras

    from tfllm.models.decoder import DecoderBackbone
    from tfllm.tasks.causal_lm import CausalLM

    tokenizer = CharTokenizer(special_tokens={"pad": "<pad>", "unk": "<unk>", "bos": "<s>"})
    tokenizer.adapt([TEXT + "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\n"])
    keras.utils.set_random_seed(0)
    backbone = DecoderBackbone(
        vocabulary_size=tokenizer.vocabulary_size,
        num_layers=2,
        hidden_dim=32,
        num_heads=4,
        max_sequence_length=128,
        positional={"name": "rope"},
    )
    return CausalLM(backbone), tokenizer


def log_softmax(x):
    x = x.astype(np.float64)
    return (
        x
        - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - x.max(-1, keepdims=True)
    )


def test_perplexity_is_exp_of_the_mean_nll_computed_independently(tiny):
    model, tokenizer = tiny
    ids = [tokenizer.bos_id, *tokenizer.encode_one(TEXT)]
    # One pass over the whole text: every token's NLL given everything before it.
    lp = log_softmax(model(np.asarray([ids], np.int32)).numpy()[0])
    nll = -np.array([lp[t - 1, ids[t]] for t in range(1, len(ids))])
    whole = perplexity(model, tokenizer, TEXT, window=128)
    assert whole.tokens == len(ids) - 1
    assert whole.perplexity == pytest.approx(math.exp(nll.mean()), rel=1e-5)
    assert whole.bits_per_byte == pytest.approx(nll.sum() / math.log(2) / len(TEXT), rel=1e-5)

    # A sliding window of 16 with stride 1: token t is predicted from the 15 tokens before it.
    brute = []
    for t in range(1, len(ids)):
        context = ids[max(0, t - 15) : t + 1]
        lp = log_softmax(model(np.asarray([context], np.int32)).numpy()[0])
        brute.append(-lp[-2, ids[t]])
    sliding = perplexity(model, tokenizer, TEXT, window=16, stride=1)
    assert sliding.perplexity == pytest.approx(math.exp(np.mean(brute)), rel=1e-5)
    assert sliding.perplexity != pytest.approx(whole.perplexity, rel=1e-3)  # context matters


@pytest.mark.parametrize("length,window,stride", [(2, 2, 1), (10, 4, 3), (100, 16, 8), (17, 16, 5)])
def test_windows_score_every_token_once(length, window, stride):
    scored = []
    for begin, end, first in window_spans(length, window, stride):
        assert end - begin <= window and begin <= first - 1 < end
        scored += range(first, end)
    assert scored == list(range(1, length))


def test_bad_windows_are_errors(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="stride must be in"):
        perplexity(model, tokenizer, TEXT, window=16, stride=16)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        perplexity(model, tokenizer, TEXT, window=129)
    with pytest.raises(ValueError, match="empty"):
        perplexity(model, tokenizer, "")


def test_bleu_scores_by_hand_and_with_uneven_references():
    # One sentence, 6 hypothesis tokens against a 7-token reference: 1-gram 5/6 ... by hand.
    found = corpus_bleu(["the cat sat on a mat"], [["the cat sat on the mat today"]])
    assert found.precisions == pytest.approx([500 / 6, 300 / 5, 200 / 4, 100 / 3])
    assert found.brevity_penalty == pytest.approx(math.exp(1 - 7 / 6))
    geometric = (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert found.score == pytest.approx(100 * geometric * math.exp(1 - 7 / 6))
    assert (found.hyp_len, found.ref_len) == (6, 7)
    assert corpus_bleu(["same words here"], ["same words here"]).score == pytest.approx(0.0)
    assert corpus_bleu(["a b c d e"], ["a b c d e"]).score == pytest.approx(100.0)
    # A second reference for one sentence only: the other sentence keeps its single one.
    both = corpus_bleu(["a b c d e", "v w x y z"], [["a b c d e"], ["q r s t u", "v w x y z"]])
    assert both.score == pytest.approx(100.0)
    assert corpus_bleu(["A B C D E"], ["a b c d e"], lowercase=True).score == pytest.approx(100.0)
    assert corpus_bleu(["abcde"], ["abcde"], tokenize="char").score == pytest.approx(100.0)
    with pytest.raises(ValueError, match="pair by position"):
        corpus_bleu(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="tokenize"):
        corpus_bleu(["a"], ["a"], tokenize="words")


def test_label_scores_are_the_models_log_likelihoods(tiny):
    model, tokenizer = tiny
    demos = [LabelledText("good", "1"), LabelledText("bad", "0"), LabelledText("fine", "1")]
    clf = LabelLikelihoodClassifier(
        model,
        tokenizer,
        {"0": " no", "1": " yes"},
        template="Q: {text}\nA:",
        shots=2,
        demonstrations=demos,
        seed=3,
    )
    prompt = clf.prompt("is it")
    assert prompt.count("Q: ") == 3 and prompt.endswith("Q: is it\nA:")
    assert prompt.count("\n\n") == 2
    scores = clf.label_log_likelihoods(["is it", "maybe"])
    for row, text in enumerate(["is it", "maybe"]):
        context = [tokenizer.bos_id, *tokenizer.encode_one(clf.prompt(text))]
        for col, verbal in enumerate([" no", " yes"]):
            ids = context + tokenizer.encode_one(verbal)
            lp = log_softmax(model(np.asarray([ids], np.int32)).numpy()[0])
            want = sum(lp[t - 1, ids[t]] for t in range(len(context), len(ids)))
            assert scores[row, col] == pytest.approx(want, rel=1e-5)
    report = clf.evaluate([LabelledText("is it", "1"), LabelledText("maybe", "0")])
    assert report.total == 2 and 0.0 <= report.accuracy <= 1.0
    assert report.as_dict()["confusion"] == report.confusion


def test_labelled_files_give_errors_with_the_file_and_line(tmp_path):
    good = tmp_path / "good.tsv"
    good.write_text("sentence\tlabel\na fine film\t1\na dull one\t0\n")
    assert [e.label for e in read_labelled_tsv(str(good), ["0", "1"])] == ["1", "0"]
    cases = {
        "sentence\tlabel\nok\t1\nnice\t2\n": "bad.tsv:3: label '2' is not one of",
        "sentence\tlabel\n \t1\n": "bad.tsv:2: the text is empty",
        "sentence\tlabel\nok\t1\textra\n": "bad.tsv:2: 3 tab-separated fields",
        "text\tlabel\nok\t1\n": "bad.tsv:1: no 'sentence' column",
    }
    for content, message in cases.items():
        bad = tmp_path / "bad.tsv"
        bad.write_text(content)
        with pytest.raises(ConfigError, match=message):
            read_labelled_tsv(str(bad), ["0", "1"])


def test_chinchilla_allocation_minimizes_the_law_at_fixed_compute():
    from scipy.optimize import minimize_scalar

    from tfllm.evaluation.scaling_laws import CHINCHILLA, chinchilla

    compute = 5.76e23  # Chinchilla's own budget
    result = chinchilla(compute)
    assert 6 * result["params"] * result["tokens"] == pytest.approx(compute, rel=1e-9)
    best = minimize_scalar(
        lambda log_n: CHINCHILLA.loss(math.exp(log_n), compute / (6 * math.exp(log_n))),
        bounds=(math.log(1e8), math.log(1e13)),
        method="bounded",
        options={"xatol": 1e-10},
    )
    assert result["params"] == pytest.approx(math.exp(best.x), rel=1e-3)
    assert result["expected_loss"] == pytest.approx(best.fun, rel=1e-9)
    assert 20e9 < result["params"] < 80e9  # tens of billions, as the paper's fit gives


def test_power_law_fit_recovers_a_known_law():
    from tfllm.evaluation.scaling_laws import SweepPoint, fit_power_law

    sizes = [2e4, 6e4, 2e5, 6e5, 2e6]
    points = [
        SweepPoint(f"run{i}", int(n), 10**6, 1.4 + 30.0 / n**0.35) for i, n in enumerate(sizes)
    ]
    fit = fit_power_law(points)
    assert fit.E == pytest.approx(1.4, abs=1e-3)
    assert fit.alpha == pytest.approx(0.35, abs=1e-3)
    assert fit.residual_rmse < 1e-6


@pytest.mark.parametrize("name", ["accuracy", "perplexity", "bias"])
def test_likelihood_evals_refuse_a_model_that_is_not_a_causal_lm(name):
    """`eval=accuracy ckpt=<a classifier run>` once died in numpy indexing; now one error."""
    import keras

    from tfllm.evaluation.runner import evaluate
    from tfllm.registry import ConfigError

    classifier = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ConfigError, match=f"eval={name} scores text .* holds a Sequential"):
        evaluate(classifier, None, {"eval": {"name": name}, "data": {}})


def test_power_law_fit_of_as_few_runs_as_parameters_warns_nothing():
    """Three runs fit three parameters exactly: scipy's covariance warning (about a covariance
    the fit does not use) stays out of the user's output."""
    import warnings

    from tfllm.evaluation.scaling_laws import SweepPoint, fit_power_law

    points = [
        SweepPoint(f"run{i}", n, 10**6, 1.4 + 30.0 / n**0.35) for i, n in enumerate([2e4, 2e5, 2e6])
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        fit = fit_power_law(points)
    assert fit.residual_rmse < 1e-3


def test_attention_maps_are_causal_distributions(tiny, tmp_path):
    pytest.importorskip("matplotlib")
    from tfllm.evaluation.attention_maps import attention_probabilities, plot_attention

    model, tokenizer = tiny
    tokens, maps = attention_probabilities(model, tokenizer, "to be or not")
    assert maps.shape == (2, 4, len(tokens), len(tokens)) and tokens[0] == "<s>"
    np.testing.assert_allclose(maps.sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.triu(maps, k=1) == 0)  # nothing attends to the future
    assert model.backbone.blocks[0].attention.last_attention is None  # nothing left behind
    paths = plot_attention(tokens, maps, str(tmp_path / "maps"))
    assert len(paths) == 2 and all(p.endswith(".png") for p in paths)
    assert all(open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_evaluate_and_scaling_commands(tiny, tmp_path):
    from tfllm.config import compose
    from tfllm.runs import write_checkpoint

    model, tokenizer = tiny
    cfg = compose("config", ["run_dir=x", "positional=rope", "model=tiny"])
    cfg.pop("run_dir")
    cfg["model"].update(num_layers=2, hidden_dim=32, num_heads=4, max_sequence_length=128)
    write_checkpoint(model, tokenizer, cfg, str(tmp_path / "ckpt"))
    corpus = tmp_path / "text.txt"
    corpus.write_text(TEXT)
    labelled = tmp_path / "labels.tsv"
    labelled.write_text("sentence\tlabel\nto be\t1\nnot to be\t0\nthe question\t1\n")
    out = tmp_path / "ppl.json"
    proc = run_cli(
        [
            "evaluate",
            f"ckpt={tmp_path / 'ckpt'}",
            "eval=perplexity",
            f"data.path={corpus}",
            "eval.window=32",
            f"out={out}",
        ]
    )
    result = json.loads(out.read_text())
    expected = perplexity(model, tokenizer, TEXT, window=32)
    assert result["perplexity"] == pytest.approx(expected.perplexity, rel=1e-5)
    assert "| perplexity |" in proc.stdout and "| bits_per_byte |" in proc.stdout

    proc = run_cli(
        [
            "evaluate",
            f"ckpt={tmp_path / 'ckpt'}",
            "eval=accuracy",
            f"data.path={labelled}",
            "eval.template='Q: {text} A:'",
            "format=json",
        ]
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["0-shot"]["examples"] == 3 and result["chance"] == 0.5

    bad = run_cli(
        ["evaluate", f"ckpt={tmp_path / 'ckpt'}", "eval=accuracy", f"data.path={corpus}"],
        check=False,
    )
    assert bad.returncode == 2 and "text.txt:1: no 'sentence' column" in bad.stderr

    proc = run_cli(["scaling", "chinchilla", "compute=1e21"])
    assert "tokens per parameter" in proc.stdout
    assert json.loads(proc.stdout.splitlines()[-1])["compute_flops"] == 1e21


def test_bias_report_compares_groups_by_attribute_likelihood(tiny):
    from tfllm.evaluation.bias import bias_report, bias_table
    from tfllm.evaluation.classification import LabelLikelihoodClassifier

    model, tokenizer = tiny
    templates = ["The {group} is", "A {group} was"]
    groups = {"size/big": ["giant"], "size/small": ["ant", "mouse"]}
    attributes = {"positive": ["kind", "good"], "negative": ["bad"]}
    report = bias_report(model, tokenizer, templates, groups, attributes)
    scorer = LabelLikelihoodClassifier(
        model, tokenizer, {"0": " kind", "1": " good", "2": " bad"}, template="{text}"
    )
    prompts = [t.format(group=g) for t in templates for g in ["ant", "mouse"]]
    s = scorer.label_log_likelihoods(prompts)
    small = next(r for r in report["groups"] if r["group"] == "size/small")
    assert small["score"] == pytest.approx(float((s[:, :2].mean(1) - s[:, 2]).mean()), rel=1e-6)
    assert small["prompts"] == 4
    big = next(r for r in report["groups"] if r["group"] == "size/big")
    assert report["largest_gap"]["size"] == pytest.approx(abs(big["score"] - small["score"]))
    assert big["deviation"] == pytest.approx(-small["deviation"])
    assert "largest gap in size" in bias_table(report)
    with pytest.raises(ConfigError, match="placeholder"):
        bias_report(model, tokenizer, ["no slot"], groups, attributes)


def test_chain_of_thought_scores_labels_after_the_models_own_reasoning(tiny):
    from tfllm.generation.decoder import GenerationConfig, Generator

    model, tokenizer = tiny
    clf = LabelLikelihoodClassifier(
        model,
        tokenizer,
        {"0": " no", "1": " yes"},
        template="Q: {text}",
        chain_of_thought=" Think.",
        answer_cue=" So:",
        reasoning_tokens=5,
    )
    scores = clf.label_log_likelihoods(["is it"])
    context = [tokenizer.bos_id, *tokenizer.encode_one("Q: is it Think.")]
    buffer, _, lengths = Generator(model, tokenizer).generate_ids(
        [context], GenerationConfig(max_new_tokens=5, temperature=0.0)
    )
    context = buffer[0, : lengths[0]].tolist() + tokenizer.encode_one(" So:")
    assert len(context) > len(tokenizer.encode_one("Q: is it Think. So:")) + 1  # it reasoned
    for col, verbal in enumerate([" no", " yes"]):
        ids = context + tokenizer.encode_one(verbal)
        lp = log_softmax(model(np.asarray([ids], np.int32)).numpy()[0])
        want = sum(lp[t - 1, ids[t]] for t in range(len(context), len(ids)))
        assert scores[0, col] == pytest.approx(want, rel=1e-5)


def test_scaling_fit_reads_a_sweep_of_runs(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from tfllm.commands.inspect import scaling_main as scaling_command
    from tfllm.config import compose
    from tfllm.models.builder import build_model
    from tfllm.runs import write_checkpoint

    tokenizer = CharTokenizer()
    tokenizer.adapt([TEXT])
    sizes = {}
    for i, width in enumerate([16, 32, 64]):
        cfg = compose("config", ["run_dir=x", "model=nano", f"model.hidden_dim={width}"])
        cfg.pop("run_dir")
        model = build_model(cfg, tokenizer.vocabulary_size)
        run = tmp_path / "sweep" / str(i)
        write_checkpoint(model, tokenizer, cfg, str(run))
        sizes[str(run)] = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        metrics = {"step": 100, "val_loss": 1.5 + 40.0 / sizes[str(run)] ** 0.4}
        (run / "metrics.json").write_text(json.dumps(metrics))
    scaling_command(["fit", f"sweep_dir={tmp_path / 'sweep'}", f"out={tmp_path / 'fit'}"])
    out = capsys.readouterr().out
    fit = json.loads((tmp_path / "fit" / "scaling_law.json").read_text())
    assert {p["run_dir"]: p["params"] for p in fit["points"]} == sizes
    assert fit["alpha"] == pytest.approx(0.4, abs=1e-3) and fit["E"] == pytest.approx(1.5, abs=1e-3)
    batch, seq = cfg["data"]["batch_size"], cfg["data"]["sequence_length"]
    assert all(p["tokens"] == 100 * batch * seq for p in fit["points"])
    assert (tmp_path / "fit" / "scaling_law.png").read_bytes()[:4] == b"\x89PNG"
    assert "L(N) = 1.5" in out


def test_calibration_subtracts_the_content_free_prior(tiny):
    from tfllm.evaluation.classification import CONTENT_FREE

    model, tokenizer = tiny
    clf = LabelLikelihoodClassifier(model, tokenizer, {"0": " no", "1": " yes"}, "Q: {text} A:")
    examples = [LabelledText("to be", "1"), LabelledText("or not", "0"), LabelledText("be", "1")]
    raw, calibrated = clf.evaluate(examples, calibrate=True)
    assert raw.confusion == clf.evaluate(examples).confusion
    scores = clf.label_log_likelihoods([e.text for e in examples])
    free = clf.label_log_likelihoods(list(CONTENT_FREE))
    prior = np.exp(free - free.max(1, keepdims=True))
    prior = np.log((prior / prior.sum(1, keepdims=True)).mean(0))
    normalized = scores - np.log(np.exp(scores).sum(1, keepdims=True))
    predicted = np.argmax(normalized - prior, axis=1)
    expected = [[0, 0], [0, 0]]
    for e, p in zip(examples, predicted, strict=True):
        expected[int(e.label)][int(p)] += 1
    assert calibrated.confusion == expected


def test_macro_f1_averages_over_the_labels_present():
    from tfllm.tasks.classifier import confusion_metrics

    # Two labels seen and perfectly predicted; a third never occurs: macro-F1 1.0, not 0.67.
    assert confusion_metrics([[3, 0, 0], [0, 4, 0], [0, 0, 0]]) == (1.0, 1.0)
    # A label only ever predicted (never true) counts, with F1 0, as scikit-learn counts it.
    accuracy, macro = confusion_metrics([[3, 1], [0, 0]])
    assert accuracy == 0.75 and macro == pytest.approx((2 * 1.0 * 0.75 / 1.75 + 0.0) / 2)
