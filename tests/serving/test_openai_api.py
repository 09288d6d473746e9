"""The OpenAI-compatible API of `tfllm serve`, driven by the official `openai` SDK.

Real parts only: a tiny causal LM trained with a chat template and exported, an embedding model
and an (untrained) encoder-decoder exported, one `tfllm serve` process on 127.0.0.1 with a
bearer token serving all three (TF Serving's gRPC and REST beside the OpenAI port), and Python
generation as the reference.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import run_cli, serve_process

openai = pytest.importorskip("openai")

TOKEN = "s3cret-token"
TEMPLATE = (
    "{% for m in messages %}{{ m.role }}: {{ m.content }} | {% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
CORPUS = (
    "BERNARDO:\nWho's there?\n\nFRANCISCO:\nNay, answer me: stand, and unfold yourself.\n\n"
    "BERNARDO:\nLong live the king!\n\nFRANCISCO:\nBernardo?\n\nBERNARDO:\nHe.\n\n"
) * 12
MAX_NEW = 8


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A causal LM with a chat template and an embedding model, exported."""
    root = tmp_path_factory.mktemp("openai")
    corpus = root / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    run = root / "run"
    import tfllm
    from tfllm.export.exporter import export_model
    from tfllm.export.serving_module import ExportSettings
    from tfllm.runs import load_run

    tfllm.train(  # in this process (the CLI's train and export are tested elsewhere)
        "debug=fast",
        f"data.path={corpus}",
        "trainer.max_steps=10",
        "model.max_sequence_length=96",  # room for a rendered conversation
        "trainer.callbacks=[]",
        f"+chat.template='{TEMPLATE}'",
        run_dir=str(run),
    )
    model, tokenizer, cfg = load_run(str(run))
    settings = ExportSettings(max_new_tokens=MAX_NEW, max_new_tokens_limit=16)
    # validate=False: tests/serving/test_serving.py validates causal LM exports.
    export_model(model, tokenizer, cfg, str(root / "exports"), "lm", 1, settings, validate=False)
    embedder, tokenizer = _export_embedder(root / "exports")
    t5 = _export_t5(root / "exports")
    config = root / "models.config"
    config.write_text(
        "model_config_list {\n"
        + "".join(
            f"  config {{ name: '{n}' base_path: '{root / 'exports' / n}' "
            "model_platform: 'tensorflow' }\n"
            for n in ("lm", "emb", "t5")
        )
        + "}\n",
        encoding="utf-8",
    )
    return root, run, config, (embedder, tokenizer), t5


def _export_embedder(base):
    from tfllm.components.tokenizers.wordpiece import WordPieceTokenizer
    from tfllm.export.exporter import export_model
    from tfllm.models.encoder import EncoderBackbone
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
    # validate=False: test_serving.py validates this embedder's export.
    result = export_model(model, tokenizer, cfg, str(base), "emb", validate=False)
    assert result.signatures == ["count_tokens", "embed", "serving_default"]
    return model, tokenizer


def _export_t5(base):
    """An untrained encoder-decoder on bytes, exported and validated (the default run's one
    encoder-decoder export: its greedy, beam, score and count_tokens answers equal Python's)."""
    import keras

    from tfllm.components.tokenizers.byte import ByteTokenizer
    from tfllm.export.exporter import export_model
    from tfllm.models.encoder_decoder import EncoderDecoderBackbone
    from tfllm.tasks.seq2seq import Seq2SeqLM

    keras.utils.set_random_seed(0)
    tokenizer = ByteTokenizer()
    backbone = EncoderDecoderBackbone(
        vocabulary_size=tokenizer.vocabulary_size,
        num_layers=1,
        hidden_dim=16,
        num_heads=2,
        max_sequence_length=T5_LENGTH,
        positional={"name": "relative", "num_buckets": 8},
    )
    model = Seq2SeqLM(backbone, special_tokens={"pad": tokenizer.pad_id, "eos": tokenizer.eos_id})
    cfg = {"task": {"name": "seq2seq"}, "model": {"max_sequence_length": T5_LENGTH}}
    result = export_model(model, tokenizer, cfg, str(base), "t5")
    assert "count_tokens" in result.signatures
    assert "token counts equal" in result.validation["compared"]
    return model, tokenizer


T5_LENGTH = 12


@pytest.fixture(scope="module")
def server(exports):
    _, _, config, _, _ = exports
    extra = [f"model_config_file={config}", "openai_port=0", f"auth_token={TOKEN}"]
    with serve_process(None, None, extra=extra) as (proc, ports):
        assert len(ports) == 3, ports
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{ports[2]}/v1", api_key=TOKEN, max_retries=0
        )
        yield proc, ports, client


@pytest.fixture(scope="module")
def local(exports):
    from tfllm.runs import load_run

    _, run, _, _, _ = exports
    return load_run(str(run))


def python_completion(local, prompt: str, max_new: int = MAX_NEW) -> str:
    from tfllm.generation.decoder import GenerationConfig, Generator

    model, tokenizer, _ = local
    out = Generator(model, tokenizer).generate([prompt], GenerationConfig(max_new_tokens=max_new))
    return out[0][0]


def rendered(messages) -> str:
    from tfllm.chat_template import render_template

    return render_template(TEMPLATE, messages)


MESSAGES = [
    {"role": "system", "content": "Answer as the guard."},
    {"role": "user", "content": "Who's there?"},
]


def test_models_are_listed_and_retrieved(server):
    _, _, client = server
    assert sorted(m.id for m in client.models.list().data) == ["emb", "lm", "t5"]
    model = client.models.retrieve("lm")
    assert (model.id, model.object, model.owned_by) == ("lm", "model", "tfllm")


def test_a_chat_completion_is_python_generation_of_the_rendered_template(server, local):
    _, _, client = server
    model, tokenizer, _ = local
    reply = client.chat.completions.create(model="lm", messages=MESSAGES, temperature=0)
    prompt = rendered(MESSAGES)
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == python_completion(local, prompt)
    assert reply.choices[0].finish_reason == "length"  # 8 tokens, no stop
    prompt_tokens = len(tokenizer.encode_one(prompt)) + (tokenizer.prompt_bos_id is not None)
    assert reply.usage.prompt_tokens == prompt_tokens
    assert reply.usage.completion_tokens == MAX_NEW
    assert reply.usage.total_tokens == prompt_tokens + MAX_NEW
    assert reply.model == "lm" and reply.system_fingerprint == "tfllm-lm-v1"


def test_tfllm_chat_with_the_server_alone_answers_as_the_chat_endpoint(server, monkeypatch, capsys):
    """`tfllm chat server=...` with no export folder at hand: the export describes its chat
    template, tokens and context, and the reply equals the OpenAI endpoint's for the same
    messages. An export that cannot describe itself (the embedder's) is one clear error."""
    import io

    from tfllm import cli

    _, ports, client = server
    want = client.chat.completions.create(
        model="lm", messages=MESSAGES, temperature=0, max_tokens=MAX_NEW
    )
    chat = ["chat", f"server=127.0.0.1:{ports[0]}", f"auth_token={TOKEN}"]
    settings = [f"system_prompt='{MESSAGES[0]['content']}'", f"max_new_tokens={MAX_NEW}"]
    monkeypatch.setattr("sys.stdin", io.StringIO(MESSAGES[1]["content"] + "\n"))
    capsys.readouterr()
    cli.main([*chat, "model_name=lm", *settings])
    assert capsys.readouterr().out == f"assistant> {want.choices[0].message.content}\n\n"
    for argv, error in (
        ([*chat, "model_name=emb"], "server: the export has no 'describe' signature"),
        (["chat", f"server=127.0.0.1:{ports[0]}", "model_name=lm"], "UNAUTHENTICATED"),
    ):
        with pytest.raises(SystemExit) as exited:
            cli.main([*argv, *settings])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("tfllm: error: ") and error in err and len(err.splitlines()) == 1


def test_a_developer_message_is_the_system_turn(server):
    """OpenAI's newer clients send the instructions as role `developer`: the template
    renders it as the system turn, so the reply equals the one a `system` message gets."""
    _, _, client = server
    developer = [dict(MESSAGES[0], role="developer"), MESSAGES[1]]
    replies = [
        client.chat.completions.create(model="lm", messages=m, temperature=0)
        for m in (MESSAGES, developer)
    ]
    assert replies[0].choices[0].message.content == replies[1].choices[0].message.content
    assert replies[0].usage.prompt_tokens == replies[1].usage.prompt_tokens


def test_a_streamed_chat_reassembles_to_the_same_text_and_usage(server):
    _, _, client = server
    whole = client.chat.completions.create(model="lm", messages=MESSAGES, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model="lm",
            messages=MESSAGES,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[-1] == whole.choices[0].finish_reason and not any(reasons[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert len(chunks) > 3


def test_n_choices_sample_reproducibly_with_a_seed(server):
    _, _, client = server
    ask = dict(model="lm", messages=MESSAGES, temperature=1.0, n=2, seed=7, max_tokens=12)
    first, again = client.chat.completions.create(**ask), client.chat.completions.create(**ask)
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1]
    assert texts == [c.message.content for c in again.choices]
    other = client.chat.completions.create(**dict(ask, seed=8))
    assert [c.message.content for c in other.choices] != texts
    assert 0 < first.usage.completion_tokens <= 2 * 12
    # Streamed in pieces, the same seed draws the same two replies.
    streamed = ["", ""]
    for chunk in client.chat.completions.create(**ask, stream=True):
        for c in chunk.choices:
            streamed[c.index] += c.delta.content or ""
    assert streamed == texts


def test_stop_strings_and_max_tokens(server, local):
    _, _, client = server
    greedy = python_completion(local, rendered(MESSAGES), 16)
    assert len(greedy) > 4, greedy
    stop = greedy[4:6]  # two characters the reply contains: it ends before their first place
    reply = client.chat.completions.create(
        model="lm", messages=MESSAGES, temperature=0, max_tokens=16, stop=[stop, "@@"]
    )
    assert reply.choices[0].message.content == greedy[: greedy.index(stop)]
    assert reply.choices[0].finish_reason == "stop"
    chunks = client.chat.completions.create(
        model="lm", messages=MESSAGES, temperature=0, max_tokens=16, stop=[stop], stream=True
    )
    pieces = [(c.choices[0].delta.content, c.choices[0].finish_reason) for c in chunks]
    assert "".join(p or "" for p, _ in pieces) == greedy[: greedy.index(stop)]
    assert pieces[-1][1] == "stop"
    short = client.chat.completions.create(
        model="lm", messages=MESSAGES, temperature=0, max_completion_tokens=2
    )
    assert short.choices[0].finish_reason == "length"
    assert short.usage.completion_tokens == 2
    assert short.choices[0].message.content == greedy[:2]  # a character tokenizer


def test_completions_take_one_or_many_prompts(server, local):
    _, _, client = server
    prompts = ["BERNARDO:", "Who's there?"]
    out = client.completions.create(model="lm", prompt=prompts, temperature=0, max_tokens=5)
    assert out.object == "text_completion"
    assert [c.text for c in out.choices] == [python_completion(local, p, 5) for p in prompts]
    streamed = client.completions.create(
        model="lm", prompt="BERNARDO:", temperature=0, max_tokens=5, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == out.choices[0].text


def test_an_encoder_decoder_completes_as_python_and_cuts_long_sources(server, exports, capsys):
    """`/v1/completions` on an encoder-decoder export answers as `Seq2SeqGenerator` does, and
    counts the source ids the encoder reads (eos included). A source longer than the encoder
    is cut, as Python cuts it, not refused: only a causal LM's context can run out."""
    from tfllm.generation.decoder import GenerationConfig
    from tfllm.generation.seq2seq import Seq2SeqGenerator

    _, _, client = server
    model, tokenizer = exports[4]
    sources = ["abc", "x" * (3 * T5_LENGTH)]
    out = client.completions.create(model="t5", prompt=sources, temperature=0, max_tokens=4)
    config = GenerationConfig(max_new_tokens=4)
    want = Seq2SeqGenerator(model, tokenizer).complete(sources, config)
    assert [c.text for c in out.choices] == [w[0].text for w in want]
    assert [c.finish_reason for c in out.choices] == [w[0].finish_reason for w in want]
    assert out.usage.prompt_tokens == (3 + 1) + T5_LENGTH  # the long source cut to the encoder
    assert out.usage.completion_tokens == sum(len(w[0].token_ids) for w in want)
    streamed = client.completions.create(
        model="t5", prompt="abc", temperature=0, max_tokens=4, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == out.choices[0].text
    # The CLI prints an encoder-decoder's output alone (a causal LM's after its prompt),
    # from a server and from the export loaded in the command's process alike.
    _, ports, _ = server
    args = ["prompt=abc", "max_new_tokens=4", "temperature=0"]
    for command in (
        ["client", "model=t5", f"port={ports[0]}", f"auth_token={TOKEN}", *args],
        ["client", "model=t5", f"port={ports[0]}", f"auth_token={TOKEN}", "stream=true", *args],
    ):
        assert run_cli(command).stdout == out.choices[0].text + "\n", command
    from tfllm import cli

    capsys.readouterr()
    cli.main(["generate", f"ckpt={exports[0] / 'exports' / 't5'}", *args])  # (in this process)
    assert capsys.readouterr().out == out.choices[0].text + "\n"
    # Beam search of an export is its `beam` signature: the best sequences Python's search finds.
    best = Seq2SeqGenerator(model, tokenizer).beam(
        ["abc"], num_beams=3, max_new_tokens=4, num_return_sequences=2
    )[0]
    beams = ["num_beams=3", "num_return_sequences=2", "max_new_tokens=4", "prompt=abc"]
    cli.main(["generate", f"ckpt={exports[0] / 'exports' / 't5'}", *beams])
    assert capsys.readouterr().out == "".join(f"{text}\n" + "-" * 40 + "\n" for text in best)
    from tfllm.commands.common import CommandError
    from tfllm.commands.generate import exported_completions

    lm = str(exports[0] / "exports" / "lm" / "1")  # a causal LM's export has no beam search
    with pytest.raises(CommandError, match="num_beams: this export has no beam signature"):
        exported_completions(lm, ["abc"], GenerationConfig(max_new_tokens=4), num_beams=3)


def test_an_export_streams_in_growing_pieces_what_generate_answers(exports):
    """The streaming signatures, in this process: the first text comes after one call for one
    token, and the pieces join to `generate`'s completions, greedy, sampled and stopped."""
    import tensorflow as tf

    from tfllm.serving.openai_stream import IncrementalCompletions

    root = exports[0]
    loaded = tf.saved_model.load(str(root / "exports" / "lm" / "1"))
    sizes = []

    def run(signature, inputs):
        if signature == "generate_ids":
            sizes.append(int(inputs["max_new_tokens"]))
        out = loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in out.items()}

    def whole(prompts, max_new, temperature, seed):
        out = run(
            "generate",
            {
                "prompts": np.asarray(prompts, dtype=object),
                "max_new_tokens": np.int32(max_new),
                "temperature": np.float32(temperature),
                "top_k": np.int32(0),
                "top_p": np.float32(1.0),
                "seed": np.int32(seed),
            },
        )
        texts = [t.decode() for t in out["completions"]]
        return texts, [r.decode() for r in out["finish_reasons"]], int(out["lengths"].sum())

    def streamed(prompts, max_new, temperature, seed, stops=()):
        pieces = IncrementalCompletions(run, prompts, max_new, temperature, 1.0, seed, stops)
        texts, reasons, first_after = [""] * len(prompts), [None] * len(prompts), None
        for row, piece, reason in pieces:
            if first_after is None:
                first_after = list(sizes)
            assert reasons[row] is None, "a row goes on after its finish reason"
            texts[row] += piece
            reasons[row] = reason
        return texts, reasons, pieces.new_tokens, first_after

    prompt = rendered(MESSAGES)
    texts, reasons, count = whole([prompt], 16, 0.0, 0)
    sizes.clear()
    got, got_reasons, got_count, first_after = streamed([prompt], 16, 0.0, 0)
    assert (got, got_reasons, got_count) == (texts, reasons, count)
    assert first_after == [1] and sizes == [1, 4, 11]  # pieces grow: 1, 4, then what is left
    rows = ["BERNARDO:", "BERNARDO:", "Who's there?"]
    texts, reasons, count = whole(rows, 12, 1.0, 7)
    assert texts[0] != texts[1]  # rows sample apart, and the pieces draw the same tokens
    assert streamed(rows, 12, 1.0, 7)[:3] == (texts, reasons, count)
    greedy = whole([prompt], 16, 0.0, 0)[0][0]
    stop = greedy[4:6]
    got, got_reasons, _, _ = streamed([prompt], 16, 0.0, 0, stops=[stop])
    assert got == [greedy[: greedy.index(stop)]] and got_reasons == ["stop"]


def test_embeddings_equal_the_model_in_both_encodings(server, exports):
    _, _, client = server
    embedder, tokenizer = exports[3]
    texts = ["the cat sat on the mat.", "the mat"]
    want = embedder.embed_texts(tokenizer, texts, max_length=8)
    got = client.embeddings.create(model="emb", input=texts)  # the SDK asks for base64
    np.testing.assert_allclose([d.embedding for d in got.data], want, atol=1e-5)
    floats = client.embeddings.create(model="emb", input=texts[0], encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, want[0], atol=1e-5)
    # [CLS] the cat sat on the mat . [SEP] -> 8 (the max_length), [CLS] the mat [SEP] -> 4
    assert got.usage.prompt_tokens == 12


def post(ports, path, body, token=TOKEN):
    request = urllib.request.Request(
        f"http://127.0.0.1:{ports[2]}{path}",
        data=body if isinstance(body, bytes) else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize(
    "body, status, param, code",
    [
        ({"model": "nope", "messages": MESSAGES}, 404, "model", "model_not_found"),
        (
            {"model": "lm", "messages": [{"role": "wizard", "content": "hi"}]},
            400,
            "messages[0].role",
            "invalid_value",
        ),
        ({"model": "lm", "messages": MESSAGES, "max_tokens": -1}, 400, "max_tokens", None),
        ({"model": "lm", "messages": MESSAGES, "max_tokens": 99}, 400, "max_tokens", None),
        (
            {"model": "lm", "messages": MESSAGES, "tools": []},
            400,
            "tools",
            "unsupported_parameter",
        ),
        (
            {"model": "lm", "messages": MESSAGES, "logprobs": True},
            400,
            "logprobs",
            "unsupported_value",
        ),
        ({"model": "lm", "messages": []}, 400, "messages", "invalid_value"),
        ({"model": "lm", "messages": MESSAGES, "temperature": 3}, 400, "temperature", None),
        # An embedding export has no chat template (nor any run without one).
        ({"model": "emb", "messages": MESSAGES}, 400, "model", "model_not_supported"),
        (
            {"model": "lm", "messages": [{"role": "user", "content": "x" * 100}]},
            400,
            "messages",
            "context_length_exceeded",
        ),
    ],
)
def test_malformed_requests_get_openai_errors_and_the_server_stays_up(
    server, body, status, param, code
):
    proc, ports, client = server
    got_status, got = post(ports, "/v1/chat/completions", body)
    assert got_status == status, got
    error = got["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    assert proc.poll() is None
    assert client.chat.completions.create(model="lm", messages=MESSAGES, max_tokens=1)


def test_the_sdk_raises_its_own_errors_and_the_token_is_required(server):
    _, ports, client = server
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="missing", messages=MESSAGES)
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="lm", messages=MESSAGES, logit_bias={"1": 5})
    stranger = openai.OpenAI(
        base_url=f"http://127.0.0.1:{ports[2]}/v1", api_key="guess", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()
    status, body = post(ports, "/v1/chat/completions", b"{not json")
    assert status == 400 and "JSON" in body["error"]["message"]
    status, body = post(ports, "/v1/nothing", {})
    assert status == 404
    status, body = post(ports, "/v1/completions", {"model": "emb", "prompt": "hi"})
    assert status == 400 and body["error"]["code"] == "model_not_supported", body
    assert "'generate'" in body["error"]["message"]


def test_openai_and_tf_serving_answer_from_the_same_version(server):
    """The OpenAI endpoint and TF Serving's REST Predict run the same `generate` signature."""
    _, ports, client = server
    prompt = "BERNARDO:"
    request = urllib.request.Request(
        f"http://127.0.0.1:{ports[1]}/v1/models/lm:predict",
        data=json.dumps({"instances": [prompt]}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        served = json.loads(response.read())["predictions"][0]["completions"]
    out = client.completions.create(model="lm:1", prompt=prompt, temperature=0)
    assert out.choices[0].text == served
