"""Every task exports and serves: classifiers (Classify API), reward models (Regress API) and
masked LMs (fill-mask), each exported, validated in a fresh process, served on 127.0.0.1 and
queried with the stock `tensorflow_serving.apis` stubs and over REST; the answers equal the
in-process Keras model's."""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import export_here, predict_error, run_cli, serve_process, train_here

grpc = pytest.importorskip("grpc")
pytest.importorskip("tensorflow_serving.apis")

from tensorflow.core.example import example_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

WORDS = "the a film plot actor scene story music was is very quite rather".split()
TEXTS = ["the film was very good", "a plot", "quite rather the music is"]
PAIRS = ["the film was very good", "the scene", "story"]


def write_pairs(path, n, seed):
    """Pairs labelled `same` when the second text repeats the first."""
    rng = random.Random(seed)
    lines = ["sentence\tsecond\tlabel"]
    for _ in range(n):
        label = rng.choice(["same", "differs"])
        a = rng.choices(WORDS, k=rng.randint(2, 5))
        b = list(a) if label == "same" else rng.choices(WORDS, k=rng.randint(2, 5))
        lines.append(f"{' '.join(a)}\t{' '.join(b)}\t{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def example(**features) -> example_pb2.Example:
    out = example_pb2.Example()
    for key, value in features.items():
        feature = out.features.feature[key]
        if isinstance(value, str):
            feature.bytes_list.value.append(value.encode("utf-8"))
        elif isinstance(value, int):
            feature.int64_list.value.append(value)
        else:
            feature.float_list.value.append(value)
    return out


def rest(port, path, body=None):
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# ----- the packing rule: Python and graph agree --------------------------------------------
def test_longest_first_truncation_matches_the_token_by_token_rule():
    from tfllm.tasks.packing import truncate_longest_first

    def reference(a, b, budget):  # Hugging Face's loop
        while a + b > budget:
            if a > b:
                a -= 1
            else:
                b -= 1
        return a, b

    for a in range(1, 14):
        for b in range(0, 14):
            for budget in range(2, 20):
                assert truncate_longest_first(a, b, budget) == reference(a, b, budget)


@pytest.mark.parametrize("pairs", [False, True])
def test_graph_packing_equals_python_packing(pairs):
    import tensorflow as tf

    from tfllm.components.tokenizers.wordpiece import WordPieceTokenizer
    from tfllm.export.text_graph import pack_graph
    from tfllm.tasks.packing import pack_texts

    tokenizer = WordPieceTokenizer(vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])
    rng = random.Random(3)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) for _ in range(20)]
    seconds = (
        [" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) for _ in range(20)] if pairs else None
    )
    for length in (6, 9, 16):
        want = pack_texts(tokenizer, texts, seconds, length)
        ids, mask, segments = pack_graph(
            tokenizer,
            tf.constant(texts),
            None if seconds is None else tf.constant(seconds),
            length,
            tokenizer.pad_id,
        )
        width = ids.shape[1]
        np.testing.assert_array_equal(ids.numpy(), want.ids[:, :width])
        np.testing.assert_array_equal(mask.numpy(), want.mask[:, :width])
        np.testing.assert_array_equal(segments.numpy(), want.segments[:, :width])
        assert not want.mask[:, width:].any()


# ----- a pair classifier: train -> export -> tfllm serve -> Classify ------------------------
@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    root = tmp_path_factory.mktemp("classifier")
    run = root / "run"
    train_here(
        [
            "task=classify",
            "model=bert_tiny",
            "model.num_layers=1",
            "model.hidden_dim=32",
            "tokenizer=char_mlm",
            "head.pooling=cls",
            f"data.train={write_pairs(root / 'train.tsv', 120, 0)}",
            f"data.val={write_pairs(root / 'val.tsv', 24, 1)}",
            "data.pair_column=second",
            "task.labels=[same,differs]",
            "data.batch_size=8",
            "data.sequence_length=24",
            "trainer.max_steps=6",
            "trainer.eval_every=6",
            "trainer.jit_compile=false",
            "trainer.callbacks=[]",
            "schedule.warmup_steps=2",
        ],
        run,
    )
    result = export_here(run, root / "exports", "clf")
    assert "class probabilities of 3 texts" in result.validation["compared"], result.validation
    from tfllm.runs import load_run

    model, tokenizer, cfg = load_run(str(run))
    want = model.classify_texts(tokenizer, TEXTS, PAIRS, sequence_length=24)
    with serve_process(root / "exports" / "clf", "clf") as (server, ports):
        channel = grpc.insecure_channel(f"127.0.0.1:{ports[0]}")
        yield channel, ports, want, list(model.labels)
        channel.close()
        assert server.poll() is None  # still up after every request


def examples_request(proto, model, examples, signature):
    """A Classify/Regress request (`proto`) for `model` with `examples`."""
    request = proto()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.input.example_list.examples.extend(examples)
    return request


def classify_request(examples, signature="classification"):
    return examples_request(classification_pb2.ClassificationRequest, "clf", examples, signature)


def test_classify_api_equals_the_keras_model(classifier):
    channel, _, want, labels = classifier
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = classify_request(
        [example(text=t, text_pair=p) for t, p in zip(TEXTS, PAIRS, strict=True)]
    )
    response = stub.Classify(request, timeout=60)
    assert response.model_spec.version.value == 1
    got = [[c.score for c in r.classes] for r in response.result.classifications]
    np.testing.assert_allclose(got, want, atol=1e-5)
    for result in response.result.classifications:
        assert [c.label for c in result.classes] == labels == ["same", "differs"]
    # Context features join every example, as in TF Serving.
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "clf"
    request.model_spec.signature_name = "classification"
    with_context = request.input.example_list_with_context
    with_context.context.CopyFrom(example(text_pair=PAIRS[0]))
    with_context.examples.extend([example(text=TEXTS[0])])
    got = [c.score for c in stub.Classify(request, timeout=60).result.classifications[0].classes]
    np.testing.assert_allclose(got, want[0], atol=1e-5)


def test_predict_signature_and_metadata(classifier):
    import tensorflow as tf

    channel, _, want, labels = classifier
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "clf"
    request.inputs["texts"].CopyFrom(tf.make_tensor_proto(TEXTS))
    request.inputs["text_pairs"].CopyFrom(tf.make_tensor_proto(PAIRS))
    out = stub.Predict(request, timeout=60).outputs
    np.testing.assert_allclose(tf.make_ndarray(out["probabilities"]), want, atol=1e-5)
    ids = tf.make_ndarray(out["label_ids"]).tolist()
    assert ids == np.argmax(want, axis=-1).tolist()
    assert [s.decode() for s in tf.make_ndarray(out["labels"])] == [labels[i] for i in ids]
    meta = get_model_metadata_pb2.GetModelMetadataRequest()
    meta.model_spec.name = "clf"
    meta.metadata_field.append("signature_def")
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    stub.GetModelMetadata(meta, timeout=30).metadata["signature_def"].Unpack(signature_map)
    defs = signature_map.signature_def
    assert defs["classification"].method_name == "tensorflow/serving/classify"
    assert set(defs["classification"].outputs) == {"classes", "scores"}
    assert set(defs["serving_default"].inputs) == {"texts", "text_pairs"}


def test_rest_classify_and_predict(classifier):
    _, ports, want, labels = classifier
    examples = [{"text": t, "text_pair": p} for t, p in zip(TEXTS, PAIRS, strict=True)]
    status, body = rest(
        ports[1],
        "/v1/models/clf:classify",
        {"signature_name": "classification", "examples": examples},
    )
    assert status == 200, body
    assert [[c[0] for c in row] for row in body["result"]] == [labels] * len(TEXTS)
    np.testing.assert_allclose([[c[1] for c in row] for row in body["result"]], want, atol=1e-5)
    status, body = rest(
        ports[1], "/v1/models/clf:predict", {"inputs": {"texts": TEXTS, "text_pairs": PAIRS}}
    )
    assert status == 200, body
    np.testing.assert_allclose(body["outputs"]["probabilities"], want, atol=1e-5)


def test_client_and_the_client_command_classify(classifier):
    from tfllm.serving.client import Client

    _, ports, want, labels = classifier
    for transport, port in (("grpc", ports[0]), ("rest", ports[1])):
        with Client(port=port, model="clf", transport=transport) as client:
            got = client.classify(TEXTS, PAIRS)
        np.testing.assert_allclose([[g[k] for k in labels] for g in got], want, atol=1e-5)
    proc = run_cli(
        [
            "client",
            "model=clf",
            f"port={ports[0]}",
            f"texts=[{TEXTS[0]}]",
            f"text_pairs=[{PAIRS[0]}]",
        ]
    )
    label, scores = proc.stdout.strip().split("\t")
    assert label == labels[int(np.argmax(want[0]))]
    np.testing.assert_allclose([json.loads(scores)[k] for k in labels], want[0], atol=1e-5)


@pytest.mark.parametrize(
    "examples, message",
    [
        ([example(txt="a film", text_pair="a film")], "text"),
        ([example(text=3, text_pair="a film")], "text"),
        ([example(text="", text_pair="a film")], "empty"),
        ([example(text="a film")], "text_pair"),
        ([], "Input is empty"),
    ],
)
def test_malformed_classify_requests_are_invalid_argument(classifier, examples, message):
    channel = classifier[0]
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Classify(classify_request(examples), timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()


def test_other_malformed_requests_and_the_server_stays_up(classifier):
    import tensorflow as tf

    channel, ports, want, _ = classifier
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    # Classify through a Predict-method signature; a string that is no tf.Example.
    request = classify_request([example(text="a", text_pair="b")], signature="serving_default")
    with pytest.raises(grpc.RpcError) as info:
        stub.Classify(request, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "clf"
    request.model_spec.signature_name = "classification"
    request.inputs["inputs"].CopyFrom(tf.make_tensor_proto([b"\x08\x01not an example"]))
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for body in (
        {"examples": []},
        {"examples": [{"text": True, "text_pair": "a"}]},
        {"examples": [{"text": {"b64": "!!"}, "text_pair": "a"}]},
        {"examples": "a film"},
        {"examples": [{"text": "a"}], "extra": 1},
    ):
        status, answer = rest(ports[1], "/v1/models/clf:classify", body)
        assert status == 400, (body, answer)
    status, _ = rest(ports[1], "/v1/models/clf:regress", {"examples": [{"text": "a"}]})
    assert status == 400
    got = [
        [c.score for c in r.classes]
        for r in stub.Classify(
            classify_request([example(text=TEXTS[0], text_pair=PAIRS[0])]), timeout=60
        ).result.classifications
    ]
    np.testing.assert_allclose(got, want[:1], atol=1e-5)


# ----- a reward model: Regress --------------------------------------------------------------
@pytest.fixture(scope="module")
def reward_server(tmp_path_factory):
    from tfllm.components.tokenizers.char import CharTokenizer
    from tfllm.data.chat import DEFAULT_TEMPLATE
    from tfllm.export.exporter import export_model
    from tfllm.models.decoder import DecoderBackbone
    from tfllm.serving.servables import ModelConfig
    from tfllm.serving.server import Server
    from tfllm.tasks.reward import RewardModel

    root = tmp_path_factory.mktemp("reward")
    tokenizer = CharTokenizer(special_tokens={"pad": "<pad>", "unk": "<unk>", "eos": "<eos>"})
    tokenizer.adapt([DEFAULT_TEMPLATE + " ".join(WORDS) + "?!.,HelloTQuickBrownFox"])
    backbone = DecoderBackbone(
        vocabulary_size=tokenizer.vocabulary_size,
        num_layers=1,
        hidden_dim=16,
        num_heads=2,
        max_sequence_length=64,
    )
    model = RewardModel(backbone)
    cfg = {"task": {"name": "reward"}, "data": {"sequence_length": 48, "template": None}}
    result = export_model(model, tokenizer, cfg, str(root), "rm")
    assert result.signatures == ["regression", "serving_default"]
    assert "reward scores of 3 pairs" in result.validation["compared"]
    server = Server([ModelConfig("rm", str(root / "rm"))], port=0, rest_port=0, poll_seconds=0)
    server.start()
    from tfllm.export.reward_serving import RewardServing

    reference = RewardServing(model, tokenizer, DEFAULT_TEMPLATE, 48)
    yield server, reference
    server.stop()


def regress_request(examples, signature="regression"):
    return examples_request(regression_pb2.RegressionRequest, "rm", examples, signature)


def test_regress_api_equals_the_keras_model(reward_server):
    server, reference = reward_server
    prompts = ["the plot?", "a film", "is the music very good? " * 4]
    replies = ["very good.", "the actor was", "rather"]
    want = reference.expected_scores(prompts, replies)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = regress_request(
        [example(prompt=p, reply=r) for p, r in zip(prompts, replies, strict=True)]
    )
    got = [r.value for r in stub.Regress(request, timeout=60).result.regressions]
    np.testing.assert_allclose(got, want, atol=1e-5)
    status, body = rest(
        server.rest_port,
        "/v1/models/rm:regress",
        {
            "signature_name": "regression",
            "examples": [{"prompt": p, "reply": r} for p, r in zip(prompts, replies, strict=True)],
        },
    )
    assert status == 200, body
    np.testing.assert_allclose(body["result"], want, atol=1e-5)
    from tfllm.serving.client import Client

    with Client(port=server.port, model="rm") as client:
        np.testing.assert_allclose(client.regress(prompts, replies), want, atol=1e-5)
        predicted = client.predict(
            {"prompts": np.asarray(prompts, object), "replies": np.asarray(replies, object)}
        )
    np.testing.assert_allclose(predicted["scores"], want, atol=1e-5)
    # Malformed: a missing feature, an empty reply, Regress on the Predict signature.
    for examples, signature in (
        ([example(prompt="a")], "regression"),
        ([example(prompt="a", reply="")], "regression"),
        ([example(prompt="a", reply="b")], "serving_default"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            stub.Regress(regress_request(examples, signature), timeout=60)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    still = stub.Regress(
        regress_request([example(prompt=prompts[0], reply=replies[0])]), timeout=60
    )
    assert still.result.regressions[0].value == pytest.approx(float(want[0]), abs=1e-5)
    channel.close()


def test_a_template_that_rewrites_content_cannot_be_exported():
    from tfllm.export.reward_serving import template_pieces

    with pytest.raises(ValueError, match="verbatim"):
        template_pieces(
            "{% for m in messages %}[{{ m.content | trim }}]{% endfor %}"
            "{% if add_generation_prompt %}[{% endif %}"
        )


# ----- a masked LM: fill-mask ---------------------------------------------------------------
def test_fill_mask_export_serves_the_models_fillers(tmp_path):
    from tfllm.components.tokenizers.wordpiece import WordPieceTokenizer
    from tfllm.export.exporter import export_model
    from tfllm.models.encoder import EncoderBackbone
    from tfllm.serving.client import Client
    from tfllm.serving.servables import ModelConfig
    from tfllm.serving.server import Server
    from tfllm.tasks.masked_lm import MaskedLM

    tokenizer = WordPieceTokenizer(
        vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "hello", "time"]
    )
    backbone = EncoderBackbone(
        vocabulary_size=tokenizer.vocabulary_size,
        num_layers=1,
        hidden_dim=16,
        num_heads=2,
        max_sequence_length=16,
        type_vocabulary_size=2,
        embedding_norm=True,
    )
    model = MaskedLM(backbone, special_tokens=tokenizer.special_token_ids())
    cfg = {"task": {"name": "masked_lm"}, "data": {"sequence_length": 16}}
    result = export_model(model, tokenizer, cfg, str(tmp_path), "mlm")
    assert result.signatures == ["fill_mask", "serving_default"]
    texts = ["the [MASK] was very good", "[MASK] plot [MASK]", "a film[MASK]"]
    want = model.fill_mask(tokenizer, texts, top_k=5)
    server = Server(
        [ModelConfig("mlm", str(tmp_path / "mlm"))], port=0, rest_port=0, poll_seconds=0
    )
    server.start()
    try:
        for transport, port in (("grpc", server.port), ("rest", server.rest_port)):
            with Client(port=port, model="mlm", transport=transport) as client:
                got = client.fill_mask(texts)
            assert [len(fills) for fills in got] == [1, 2, 1]
            for fills, wanted in zip(got, want, strict=True):
                for fill, wanted_fill in zip(fills, wanted, strict=True):
                    assert [w for w, _ in fill] == [
                        tokenizer.detokenize([k], skip_special_tokens=False).numpy().decode()
                        for k, _ in wanted_fill
                    ]
                    np.testing.assert_allclose(
                        [p for _, p in fill], [p for _, p in wanted_fill], atol=1e-5
                    )
        with Client(port=server.port, model="mlm") as client:
            from tfllm.serving.client import ServingClientError

            with pytest.raises(ServingClientError, match="INVALID_ARGUMENT.*MASK"):
                client.fill_mask(["no mask here"])
            assert len(client.fill_mask(["[MASK]"])[0]) == 1  # still serving
    finally:
        server.stop()


# ----- MiniLM fine-tuned on SST-2, served through Classify ----------------------------------
@pytest.mark.slow
def test_minilm_sst2_classifier_serves_its_own_accuracy(tmp_path):
    """MiniLM fine-tuned briefly on SST-2, exported, served by `tfllm serve`: the accuracy of
    Classify answers built from `tf.Example`s over all of SST-2 dev equals the in-process
    model's, example for example."""
    import csv

    from conftest import SHARED

    from tfllm.pretrained.packages import pull
    from tfllm.runs import load_run
    from tfllm.serving.client import Client

    sst2 = SHARED / "data" / "sst2"
    if not (sst2 / "dev.tsv").exists():
        pytest.skip("../shared/data/sst2 is not here")
    try:
        ckpt = pull("minilm-l6-v2")
    except RuntimeError as e:
        pytest.skip(f"cannot fetch MiniLM: {e}")
    run = tmp_path / "run"
    run_cli(
        [
            "train",
            "task=classify",
            f"init_from={ckpt}",
            f"data.train={sst2 / 'train.tsv'}",
            f"data.val={sst2 / 'dev.tsv'}",
            "data.sequence_length=48",
            "data.batch_size=32",
            "head.pooling=mean",
            "trainer.max_steps=60",
            "trainer.eval_every=60",
            "trainer.eval_batches=2",
            "trainer.callbacks=[]",
            "schedule.warmup_steps=6",
            f"run_dir={run}",
        ],
        timeout=1800,
    )
    run_cli(
        ["export", f"ckpt={run}", f"export.base_path={tmp_path / 'exports'}", "export.name=sst2"]
    )
    with open(sst2 / "dev.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    texts, labels = [r["sentence"] for r in rows], [r["label"] for r in rows]
    model, tokenizer, cfg = load_run(str(run))
    local = model.classify_texts(tokenizer, texts, sequence_length=48, batch_size=64)
    local_labels = [model.labels[i] for i in np.argmax(local, axis=-1)]
    with serve_process(tmp_path / "exports" / "sst2", "sst2") as (_, ports):
        served_labels = []
        with Client(port=ports[0], model="sst2") as client:
            for start in range(0, len(texts), 64):
                for scores in client.classify(texts[start : start + 64]):
                    served_labels.append(max(scores, key=scores.get))
    assert served_labels == local_labels
    accuracy = np.mean([a == b for a, b in zip(served_labels, labels, strict=True)])
    assert accuracy > 0.6, accuracy  # 60 steps already learn the task


# ----- a tagger: words, labels, offsets and entities ----------------------------------------
TAGS = ["O", "B-PER", "I-PER", "B-LOC"]
TAGGED_TEXTS = ["anna karenina went to  oslo", "é boris\tmet carla in rome.", "kyiv"]


def write_conll(path, n, seed):
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        for _ in range(rng.randint(3, 7)):
            word = rng.choice(["anna", "boris", "oslo", "rome", "the", "met", "in"])
            lines.append(f"{word} {rng.choice(TAGS)}")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    root = tmp_path_factory.mktemp("tagger")
    run = root / "run"
    train_here(
        [
            "task=token_classify",
            "model=bert_tiny",
            "model.num_layers=1",
            "model.hidden_dim=32",
            "tokenizer=char",
            f"task.labels=[{','.join(TAGS)}]",
            f"data.train={write_conll(root / 'train.conll', 40, 0)}",
            f"data.val={write_conll(root / 'val.conll', 8, 1)}",
            "data.sequence_length=40",
            "data.batch_size=8",
            "trainer.max_steps=4",
            "trainer.eval_every=4",
            "trainer.jit_compile=false",
            "trainer.callbacks=[]",
            "schedule.warmup_steps=1",
        ],
        run,
    )
    result = export_here(run, root / "exports", "ner")
    assert "word labels of 3 texts: identical" in result.validation["compared"], result.validation
    from tfllm.runs import load_run

    model, tokenizer, _ = load_run(str(run))
    want = model.tag_texts(tokenizer, TAGGED_TEXTS, sequence_length=40)
    with serve_process(root / "exports" / "ner", "ner") as (server, ports):
        yield ports, want
        assert server.poll() is None


def test_entity_spans_follow_bio_rules():
    from tfllm.tasks.tagging import entity_spans, split_words

    assert split_words("a\u00a0b  c") == [("a\u00a0b", 0, 3), ("c", 5, 6)]
    tags = ["I-PER", "I-PER", "B-PER", "O", "B-LOC", "I-PER", "X", "I-LOC"]
    spans = entity_spans(tags, list(range(8)), [k + 1 for k in range(8)], [1.0] * 8)
    assert [(e.label, e.start, e.end) for e in spans] == [
        ("PER", 0, 2),
        ("PER", 2, 3),
        ("LOC", 4, 5),
        ("PER", 5, 6),
        ("LOC", 7, 8),
    ]


def test_served_tags_equal_the_keras_model(tagger):
    from tfllm.serving.client import Client

    ports, want = tagger
    for transport, port in (("grpc", ports[0]), ("rest", ports[1])):
        with Client(port=port, model="ner", transport=transport) as client:
            got = client.tag(TAGGED_TEXTS)
        for text, served, expected in zip(TAGGED_TEXTS, got, want, strict=True):
            assert [(w["word"], w["start"], w["end"], w["label"]) for w in served["words"]] == [
                w[:4] for w in expected.words
            ]
            np.testing.assert_allclose(
                [w["score"] for w in served["words"]], [w[4] for w in expected.words], atol=1e-5
            )
            assert [(e["label"], e["start"], e["end"], e["text"]) for e in served["entities"]] == [
                (e.label, e.start, e.end, text[e.start : e.end]) for e in expected.entities
            ]
            np.testing.assert_allclose(
                [e["score"] for e in served["entities"]],
                [e.score for e in expected.entities],
                atol=1e-5,
            )
    assert want[0].words[4][:3] == ("oslo", 23, 27)  # character offsets, double space kept
    proc = run_cli(["client", "model=ner", f"port={ports[0]}", "text=anna went"])
    assert [w["word"] for w in json.loads(proc.stdout)["words"]] == ["anna", "went"]


@pytest.mark.parametrize(
    "texts, message",
    [([" \t "], "no words"), (["anna " * 30], "longer than the 40 tokens"), ([""], "empty")],
)
def test_malformed_tag_requests_are_invalid_argument(tagger, texts, message):
    ports, _ = tagger
    error = predict_error(ports[0], "ner", "tag", texts=texts)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()
