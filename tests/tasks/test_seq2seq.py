"""The encoder-decoder family (T5): relative position bias, cross-attention, cached decoding,
span corruption, seq2seq training, generation (greedy, sampling, beam) and BLEU."""

import itertools
import json
import math
import random

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli

from tfllm import registry
from tfllm.generation.decoder import GenerationConfig
from tfllm.generation.seq2seq import Seq2SeqGenerator
from tfllm.models.encoder_decoder import EncoderDecoderBackbone
from tfllm.tasks.seq2seq import Seq2SeqLM
from tfllm.tasks.span_corruption import span_corrupt, span_counts
from tfllm.testing import run_layer_test

VOCAB = 41
rng = np.random.default_rng(0)
SRC = rng.integers(3, VOCAB, size=(2, 7)).astype("int32")


def make_t5(positional="relative", seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    backbone = EncoderDecoderBackbone(
        vocabulary_size=VOCAB,
        num_layers=2,
        hidden_dim=16,
        num_heads=4,
        max_sequence_length=24,
        positional={"name": positional, **({"num_buckets": 8} if positional == "relative" else {})},
        **kwargs,
    )
    return Seq2SeqLM(backbone, special_tokens={"pad": 0, "eos": 1})


# ----- the task through the shared harness (its parts are in test_components) -------------
def test_seq2seq_task_harness():
    backbone = make_t5().backbone
    config = {
        "backbone": keras.saving.serialize_keras_object(backbone),
        "special_tokens": {"pad": 0, "eos": 1},
    }
    run_layer_test(
        Seq2SeqLM,
        config,
        SRC,
        call=lambda m, x: m(x, x[:, :5]),
        expected_output_shape=(2, 5, VOCAB),
        run_mixed_precision=False,
    )


# ----- relative position buckets ------------------------------------------------------------------
def reference_bucket(relative: int, causal: bool, num_buckets: int, max_distance: int) -> int:
    """T5's bucketing written out for one distance (key - query), independently."""
    bucket = 0
    if causal:
        n = max(-relative, 0)
    else:
        num_buckets //= 2
        if relative > 0:
            bucket += num_buckets
        n = abs(relative)
    exact = num_buckets // 2
    if n < exact:
        return bucket + n
    large = exact + int(
        math.log(n / exact) / math.log(max_distance / exact) * (num_buckets - exact)
    )
    return bucket + min(large, num_buckets - 1)


@pytest.mark.parametrize("causal", [True, False])
def test_relative_buckets_match_t5(causal):
    from tfllm.components.positional.relative import relative_position_buckets

    distances = np.arange(-300, 301, dtype="int32")
    got = relative_position_buckets(tf.constant(distances), causal, 32, 128).numpy()
    want = [reference_bucket(int(d), causal, 32, 128) for d in distances]
    np.testing.assert_array_equal(got, want)
    if causal:  # the future is one bucket: it is masked anyway
        assert len(set(got[distances > 0])) == 1


def test_relative_bias_depends_only_on_distance():
    from tfllm.components.positional.relative import RelativePositionBias

    bias = RelativePositionBias(num_heads=2, num_buckets=8, max_distance=16)
    bias.build()
    a = bias.attention_bias(np.arange(4), np.arange(4)).numpy()
    b = bias.attention_bias(np.arange(10, 14), np.arange(10, 14)).numpy()
    np.testing.assert_allclose(a, b)
    assert not np.allclose(a[:, 0, 1], a[:, 0, 2])


# ----- encoder-decoder properties -----------------------------------------------------------------
POSITIONALS = ["relative", "rope", "learned", "alibi", "sinusoidal"]


@pytest.mark.parametrize("positional", POSITIONALS)
def test_decoder_is_causal_and_reads_the_whole_source(positional):
    model = make_t5(positional)
    dec = rng.integers(3, VOCAB, size=(2, 8)).astype("int32")
    base = model(SRC, dec).numpy()
    for t in (0, 4):
        changed = dec.copy()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 5) % VOCAB
        out = model(SRC, changed).numpy()
        np.testing.assert_array_equal(out[:, : t + 1], base[:, : t + 1])
    src = SRC.copy()
    src[:, -1] = (src[:, -1] + 5) % VOCAB  # the last source token reaches every target position
    moved = np.abs(model(src, dec).numpy() - base).max(axis=-1)  # (B, T)
    assert (moved > 0).all()


def test_source_padding_is_invisible():
    model = make_t5()
    mask = np.ones_like(SRC)
    mask[1, 4:] = 0
    dec = rng.integers(3, VOCAB, size=(2, 5)).astype("int32")
    base = model(SRC, dec, encoder_padding_mask=mask).numpy()
    noise = SRC.copy()
    noise[1, 4:] = 9
    np.testing.assert_allclose(model(noise, dec, encoder_padding_mask=mask).numpy(), base)


@pytest.mark.parametrize(
    "positional,attention",
    [(p, {"name": "mha"}) for p in POSITIONALS]
    + [("relative", {"name": "mha", "num_kv_heads": 1})],
)
def test_cached_decoding_equals_recomputation(positional, attention):
    model = make_t5(positional, attention=attention)
    mask = np.ones_like(SRC)
    mask[0, 5:] = 0
    dec = rng.integers(3, VOCAB, size=(2, 9)).astype("int32")
    full = model(SRC, dec, encoder_padding_mask=mask).numpy()
    bound = model.bind(SRC, mask)
    cache = bound.init_cache(2, 12)
    logits, cache = bound.call_with_cache(dec[:, :4], cache, 0)
    steps = [logits.numpy()]
    for i in range(4, 9):
        logits, cache = bound.call_with_cache(dec[:, i : i + 1], cache, i)
        steps.append(logits.numpy())
    assert np.abs(np.concatenate(steps, axis=1) - full).max() <= 1e-4
    last, _ = bound.call_with_cache(dec[:, :4], bound.init_cache(2, 12), 0, logits_at=2)
    assert last.shape == (2, 1, VOCAB)  # the head ran on position 2 alone
    np.testing.assert_allclose(last.numpy()[:, 0], full[:, 2], atol=1e-4)


def test_a_self_attention_only_layer_cannot_cross_attend():
    from tfllm.models.block import TransformerBlock
    from tfllm.registry import ConfigError

    class NoCross(keras.layers.Layer):
        def __init__(self, hidden_dim, **kwargs):
            super().__init__(**kwargs)

    class RollBack(Exception):
        pass

    with pytest.raises(RollBack), registry.transaction():  # the test component is unregistered
        registry.register("attention", "no_cross_test")(NoCross)
        with pytest.raises(ConfigError, match="no_cross_test.*cannot attend"):
            TransformerBlock(
                16,
                4,
                32,
                {"name": "mha"},
                {"name": "mlp"},
                {"name": "rmsnorm"},
                cross_attention={"name": "no_cross_test"},
            )
        raise RollBack
    assert "no_cross_test" not in {e.name for e in registry.list_entries("attention")}


# ----- span corruption ----------------------------------------------------------------------------
SENTINELS = list(range(200, 232))


def reconstruct(inputs, targets):
    spans, current = {}, None
    for t in targets[:-1]:  # drop eos
        if t in SENTINELS:
            current = t
            spans[current] = []
        else:
            spans[current].append(t)
    out = []
    for t in inputs[:-1]:
        out += spans[t] if t in SENTINELS else [t]
    return out


def test_span_corruption_hides_spans_behind_sentinels():
    ids = np.arange(1000, 1000 + 8 * 64, dtype="int32").reshape(8, 64)
    inputs, targets = span_corrupt(ids, tf.constant([3, 4]), SENTINELS, eos_id=1)
    noise, spans = span_counts(64, 0.15, 3.0)
    assert (noise, spans) == (10, 3)
    assert inputs.shape == (8, 64 - noise + spans + 1) and targets.shape == (8, noise + spans + 1)
    for row in range(8):
        i, t = inputs.numpy()[row].tolist(), targets.numpy()[row].tolist()
        assert reconstruct(i, t) == ids[row].tolist()
        assert [x for x in i if x in SENTINELS] == SENTINELS[:spans]
        assert [x for x in t if x in SENTINELS] == SENTINELS[:spans]
        assert t[-1] == i[-1] == 1
    again = span_corrupt(ids, tf.constant([3, 4]), SENTINELS, eos_id=1)[0].numpy()
    other = span_corrupt(ids, tf.constant([3, 5]), SENTINELS, eos_id=1)[0].numpy()
    np.testing.assert_array_equal(again, inputs.numpy())
    assert not np.array_equal(other, again)


def test_span_corruption_compiles_with_xla():
    """The trainer's step is XLA-compiled: corruption must keep static shapes there too (it
    once failed with 'Input to reshape is a tensor with 768 values, but the requested shape
    has 684' on every `task=span_corruption` run)."""
    ids = np.arange(1000, 1000 + 12 * 64, dtype="int32").reshape(12, 64)
    corrupt = tf.function(
        lambda x, seed: span_corrupt(x, seed, SENTINELS, eos_id=1), jit_compile=True
    )
    inputs, targets = corrupt(ids, tf.constant([3, 4]))
    noise, spans = span_counts(64, 0.15, 3.0)
    assert inputs.shape == (12, 64 - noise + spans + 1) and targets.shape == (12, noise + spans + 1)
    for row in range(12):
        i, t = inputs.numpy()[row].tolist(), targets.numpy()[row].tolist()
        assert reconstruct(i, t) == ids[row].tolist()
        assert [x for x in i if x in SENTINELS] == SENTINELS[:spans]


def test_span_corruption_statistics():
    ids = np.tile(np.arange(1000, 1512, dtype="int32"), (64, 1))  # blocks of 512
    inputs, targets = span_corrupt(ids, tf.constant([0, 1]), list(range(50)))
    noise, spans = span_counts(512, 0.15, 3.0)
    assert noise == 77 and spans == 26  # 15% noise, mean span length 77/26 = 2.96
    lengths = []
    for t in targets.numpy():
        marks = [k for k, x in enumerate(t) if x < 50] + [len(t)]
        lengths += [b - a - 1 for a, b in itertools.pairwise(marks)]
    assert min(lengths) >= 1 and abs(np.mean(lengths) - 77 / 26) < 1e-6
    assert np.std(lengths) > 1  # lengths vary: spans are not all the same


def test_span_corruption_needs_sentinels():
    with pytest.raises(ValueError, match="sentinel"):
        span_corrupt(np.zeros((1, 64), "int32"), tf.constant([0, 0]), [5])


# ----- training, generation, evaluation ---------------------------------------------------------
def write_reverse_task(directory, seed=0):
    """Random letter strings and their reversals: train, val and a held-out test split."""
    gen = random.Random(seed)
    paths = {}
    for split, n in (("train", 2000), ("val", 200), ("test", 100)):
        path = directory / f"{split}.tsv"
        lines = ["source\ttarget"]
        for _ in range(n):
            s = "".join(gen.choice("abcdefgh") for _ in range(gen.randint(3, 8)))
            lines.append(f"{s}\t{s[::-1]}")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths[split] = path
    return paths


@pytest.fixture(scope="module")
def reverse_run(tmp_path_factory):
    from tfllm.config import compose
    from tfllm.training.trainer import Trainer

    root = tmp_path_factory.mktemp("reverse")
    paths = write_reverse_task(root)
    run_dir = root / "run"
    cfg = compose(
        "config",
        [
            "model=t5_tiny",
            "task=seq2seq",
            f"data.train={paths['train']}",
            f"data.val={paths['val']}",
            "data.source_length=12",
            "data.target_length=12",
            "model.hidden_dim=64",
            "model.intermediate_dim=256",
            "model.max_sequence_length=16",
            "trainer.max_steps=600",
            "trainer.jit_compile=false",
            "trainer.eval_every=600",
            "trainer.checkpoint_every=600",
            "schedule.warmup_steps=20",
            "schedule.peak_learning_rate=5e-3",
            "schedule.min_learning_rate=3e-4",
            f"run_dir={run_dir}",
        ],
    )
    trainer = Trainer(cfg, str(run_dir))
    logs = trainer.fit()
    return trainer, logs, paths, run_dir


def test_tiny_t5_learns_to_reverse(reverse_run):
    from tfllm.data.seq2seq import read_pairs
    from tfllm.generation.seq2seq import Seq2SeqGenerator

    trainer, logs, paths, _ = reverse_run
    assert logs["val_loss"] < 0.1
    pairs = read_pairs(str(paths["test"]), "source", "target")
    generator = Seq2SeqGenerator(trainer.model, trainer.tokenizer)
    outputs = generator.generate([s for s, _ in pairs], GenerationConfig(max_new_tokens=12))
    exact = np.mean([out[0] == target for out, (_, target) in zip(outputs, pairs, strict=True)])
    assert exact >= 0.95, f"exact match {exact:.3f} on the held-out split"


def test_seq2seq_greedy_equals_recomputed_argmax(reverse_run):
    from tfllm.generation.seq2seq import Seq2SeqGenerator

    trainer, _, _, _ = reverse_run
    model, tokenizer = trainer.model, trainer.tokenizer
    sources = ["abcd", "hgfedcba", "aab"]
    generator = Seq2SeqGenerator(model, tokenizer)
    got = generator.generate_ids(
        sources, GenerationConfig(max_new_tokens=10), stop_ids=[tokenizer.eos_id]
    )
    enc, mask = generator.encode_sources(sources)
    for row, source in enumerate(sources):
        dec = [model.decoder_start_id]
        for _ in range(10):
            logits = model(
                enc[row : row + 1],
                np.asarray([dec], "int32"),
                encoder_padding_mask=mask[row : row + 1].astype("int32"),
            )
            dec.append(int(np.argmax(logits[0, -1])))
            if dec[-1] == tokenizer.eos_id:
                break
        assert got[row] == dec[1:], source


def test_seq2seq_sampling_and_beam_search(reverse_run):
    from tfllm.generation.beam import beam_generate
    from tfllm.generation.seq2seq import Seq2SeqGenerator

    trainer, _, _, _ = reverse_run
    generator = Seq2SeqGenerator(trainer.model, trainer.tokenizer)
    hot = GenerationConfig(max_new_tokens=10, temperature=3.0, num_return_sequences=4, seed=1)
    samples = generator.generate(["abcdefg"], hot)[0]
    assert len(samples) == 4 and len(set(samples)) > 1  # rows sample independently
    assert generator.generate(["abcdefg"], hot)[0] == samples  # seeded
    best = beam_generate(
        trainer.model,
        trainer.tokenizer,
        ["abcdefg", "hhga"],
        num_beams=4,
        max_new_tokens=10,
        num_return_sequences=3,
    )
    assert [b[0] for b in best] == ["gfedcba", "aghh"]
    assert all(len(set(b)) == 3 for b in best)  # an n-best list of distinct outputs


@pytest.mark.slow  # the evaluate command on a T5 (21 s); by default test_evaluation runs the
# command on a decoder and scores BLEU by hand, and the T5 above learns to reverse
def test_evaluate_reports_bleu_on_the_held_out_split(reverse_run):
    import json

    _, _, paths, run_dir = reverse_run
    out = run_dir / "bleu.json"
    proc = run_cli(
        [
            "evaluate",
            f"ckpt={run_dir}",
            "eval=bleu",
            f"data.path={paths['test']}",
            "data.reference_column=target",
            "eval.max_new_tokens=12",
            "eval.tokenize=char",  # one word per row: BLEU over characters
            f"out={out}",
        ]
    )
    result = json.loads(out.read_text())
    assert "| bleu |" in proc.stdout
    assert result["examples"] == 100 and result["bleu"] > 90


def test_span_corruption_pretraining_lowers_the_loss(tiny_corpus, tmp_path):
    from tfllm.config import compose
    from tfllm.training.trainer import Trainer

    overrides = [
        "model=t5_tiny",
        "task=span_corruption",
        f"data.path={tiny_corpus}",
        "data.sequence_length=32",
        "data.batch_size=8",
        "model.hidden_dim=32",
        "model.intermediate_dim=64",
        "trainer.max_steps=60",
        "trainer.jit_compile=false",
        "trainer.eval_every=60",
        "trainer.eval_batches=4",
        "trainer.checkpoint_every=60",
        "schedule.warmup_steps=5",
        "schedule.peak_learning_rate=3e-3",
        f"run_dir={tmp_path / 'run'}",
    ]
    cfg = compose("config", overrides)
    trainer = Trainer(cfg, str(tmp_path / "run"))
    before = trainer.evaluate()["val_loss"]
    after = trainer.fit()["val_loss"]
    assert after < before - 0.5
    assert trainer.tokenizer.sentinel_ids() == list(
        range(trainer.tokenizer.vocabulary_size - 32, trainer.tokenizer.vocabulary_size)
    )
    with pytest.raises(Exception, match="sentinel"):
        Trainer(compose("config", overrides + ["tokenizer=char"]), str(tmp_path / "bad"))


def test_malformed_pairs_name_the_file_and_line(tmp_path):
    from tfllm.data.seq2seq import TSVSeq2SeqDataset
    from tfllm.registry import ConfigError

    bad = tmp_path / "bad.tsv"
    bad.write_text("source\ttarget\nabc\tcba\nabc\n\tx\n", encoding="utf-8")
    data = TSVSeq2SeqDataset(train=str(bad), val=str(bad))
    with pytest.raises(ConfigError, match=r"bad\.tsv:3: 1 tab-separated fields"):
        data.texts()
    bad.write_text("source\ttarget\nabc\tcba\n\tx\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.tsv:3: the source text is empty"):
        data.texts()


# ----- export and serving ------------------------------------------------------------------------
# Out of the default run (its time budget): the default run exports and validates an
# encoder-decoder in tests/serving/test_openai_api.py (`_export_t5`) and serves it there.
@pytest.mark.slow
def test_seq2seq_exports_serves_and_scores_as_python_does(reverse_run, tmp_path):
    """Served greedy, sampled and beam-search outputs equal `Seq2SeqGenerator`'s, served target
    log-likelihoods equal `Seq2SeqLM.score_texts`', and a request over the export's limits (too
    many new tokens, too wide a beam) is INVALID_ARGUMENT."""
    pytest.importorskip("tensorflow_serving.apis")
    from conftest import serve_process

    from tfllm.serving.client import Client, ServingClientError

    trainer, _, _, run_dir = reverse_run
    model, tokenizer = trainer.model, trainer.tokenizer
    proc = run_cli(
        [
            "export",
            f"ckpt={run_dir}",
            f"export.base_path={tmp_path}",
            "export.name=rev",
            "export.max_new_tokens=12",
            "export.max_new_tokens_limit=12",
        ]
    )
    assert "greedy outputs of 3 sources, 12 tokens: identical" in proc.stdout, proc.stdout
    assert "beams of 3 sources (4 beams): identical" in proc.stdout
    sources = ["abcd", "hgfedcba", "aab", ""]
    targets = ["dcba", "abcdefgh", "xyz", ""]
    generator = Seq2SeqGenerator(model, tokenizer)
    greedy = [g[0] for g in generator.generate(sources, GenerationConfig(max_new_tokens=12))]
    hot = GenerationConfig(max_new_tokens=12, temperature=2.0, top_k=5, seed=3)
    sampled = [g[0] for g in generator.generate(sources, hot)]
    assert greedy[:2] == ["dcba", "abcdefgh"]
    want_scores = model.score_texts(tokenizer, sources, targets)
    with serve_process(tmp_path / "rev", "rev") as (server, ports):
        for transport, port in (("grpc", ports[0]), ("rest", ports[1])):
            with Client(port=port, model="rev", transport=transport) as client:
                assert client.generate(sources) == greedy
                assert (
                    client.generate(sources, max_new_tokens=12, temperature=2.0, top_k=5, seed=3)
                    == sampled
                )
                got = client.predict(
                    {
                        "sources": np.asarray(sources, dtype=object),
                        "targets": np.asarray(targets, dtype=object),
                    },
                    signature="score",
                )
                np.testing.assert_allclose(got["log_likelihood"], want_scores, atol=1e-4)
                assert got["lengths"].tolist() == [5, 9, 4, 1]  # eos included
                with pytest.raises(ServingClientError, match="max_new_tokens must be in"):
                    client.generate(sources, max_new_tokens=13)
                for width, penalty in ((4, 1.0), (3, 0.0)):
                    served = client.predict(
                        {
                            "prompts": np.asarray(sources[:3], dtype=object),
                            "num_beams": np.int32(width),
                            "max_new_tokens": np.int32(10),
                            "length_penalty": np.float32(penalty),
                        },
                        signature="beam",
                    )
                    want = generator.beam(
                        sources[:3],
                        num_beams=width,
                        max_new_tokens=10,
                        length_penalty=penalty,
                        num_return_sequences=width,
                    )
                    got_beams = [
                        [t.decode() if isinstance(t, bytes) else t for t in row]
                        for row in served["completions"]
                    ]
                    assert got_beams == want
                    assert np.all(np.diff(served["scores"], axis=1) <= 0)  # best first
                with pytest.raises(ServingClientError, match=r"num_beams must be in \[1, 8\]"):
                    client.predict(
                        {
                            "prompts": np.asarray(sources[:1], dtype=object),
                            "num_beams": np.int32(9),
                            "max_new_tokens": np.int32(4),
                            "length_penalty": np.float32(1.0),
                        },
                        signature="beam",
                    )
        assert server.poll() is None
    assert want_scores[0] > want_scores[2]  # the reversal is likelier than a wrong target
    version = next((tmp_path / "rev").iterdir())
    proc = run_cli(
        [
            "export",
            "run",
            str(version),
            "signature=beam",
            "prompts=['abcd']",
            "num_beams=2",
            "max_new_tokens=6",
            "length_penalty=1.0",
        ]
    )
    assert json.loads(proc.stdout)["completions"][0][0] == "dcba"
