"""bpe, wordpiece and sentencepiece: exact ids against the reference libraries, round trips,
training, and SavedModels that load with only TensorFlow and tensorflow-text."""

import base64
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from references import (
    SPM_MODEL,
    corpora,
    gpt2_dir,
    hf_gpt2,
    minilm_tokenizer_json,
    shared_file,
    tiktoken_gpt2,
)

from tfllm.components.tokenizers.base import load_tokenizer
from tfllm.components.tokenizers.bpe import BPETokenizer
from tfllm.components.tokenizers.sentencepiece import SentencePieceTokenizer
from tfllm.components.tokenizers.wordpiece import WordPieceTokenizer
from tfllm.testing import run_tokenizer_test

# The default run checks a slice of every corpus; `pytest -m slow` checks every line.
SAMPLE_LINES = 1500
ODD = [
    "",
    " ",
    "  leading and trailing  ",
    "tabs\tand\nnewlines\r\n",
    "naïve café ☕",
    "日本語のテキスト",
    "emoji 🙂🙃 and 👩‍👩‍👧",
    "numbers 1234567 3.14159",
    "'s 've 'LL",
    "x" * 3000,
]


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return BPETokenizer(path=str(gpt2_dir(tmp_path_factory.mktemp("gpt2"))))


def _lines(limit):
    for name, lines in corpora().items():
        yield name, (lines if limit is None else lines[:limit])


def ids_of(tokenizer, lines, batch=512):
    out = []
    for i in range(0, len(lines), batch):
        out.extend(tokenizer(tf.constant(lines[i : i + batch])).to_list())
    return out


def check_corpora(tokenizer, reference, limit):
    for name, lines in _lines(limit):
        for i, (a, b) in enumerate(zip(ids_of(tokenizer, lines), reference(lines), strict=True)):
            assert a == b, f"{name} line {i}: {lines[i]!r}"


@pytest.mark.slow
def test_sentencepiece_and_wordpiece_equal_references_on_whole_corpora(
    spm_model, spm_reference, minilm
):
    tokenizers = pytest.importorskip("tokenizers")
    check_corpora(spm_model, spm_reference.encode, None)
    wp_ref = tokenizers.Tokenizer.from_file(minilm)
    wp_ref.no_padding()
    wp_ref.no_truncation()
    check_corpora(
        WordPieceTokenizer(path=minilm),
        lambda ls: [e.ids[1:-1] for e in wp_ref.encode_batch(ls)],
        None,
    )


def check_gpt2_corpora(gpt2, limit):
    hf, tk = hf_gpt2(), tiktoken_gpt2()
    for name, lines in _lines(limit):
        ours = ids_of(gpt2, lines)
        theirs_hf = [e.ids for e in hf.encode_batch(lines)]
        theirs_tk = tk.encode_ordinary_batch(lines)
        for i, (a, b, c) in enumerate(zip(ours, theirs_hf, theirs_tk, strict=True)):
            assert a == b == c, f"{name} line {i}: {lines[i]!r}"


def test_gpt2_bpe_ids_equal_hf_tokenizers_and_tiktoken_on_every_corpus(gpt2):
    check_gpt2_corpora(gpt2, SAMPLE_LINES)


@pytest.mark.slow
def test_gpt2_bpe_ids_equal_references_on_whole_corpora(gpt2):
    check_gpt2_corpora(gpt2, None)


def test_gpt2_bpe_on_odd_strings_and_round_trip(gpt2):
    hf = hf_gpt2()
    ours = ids_of(gpt2, ODD)
    assert ours == [e.ids for e in hf.encode_batch(ODD)]
    assert [gpt2.decode(ids) for ids in ours] == ODD
    assert gpt2.eos_id == 50256 and gpt2.vocabulary_size == 50257
    assert gpt2.tokenize("Hello world") == ["Hello", "Ġworld"]
    assert gpt2.encode("a<|endoftext|>b")["input_ids"] == [64, 50256, 65]  # kept whole


def test_tiktoken_rank_file_loads_to_the_same_tokenizer(gpt2, tmp_path):
    from references import GPT2_DIR

    from tfllm.components.tokenizers.bpe import token_bytes

    vocab = json.loads((GPT2_DIR / "gpt2_vocab.json").read_text(encoding="utf-8"))
    ranks = tmp_path / "gpt2.tiktoken"
    ranks.write_text(
        "".join(
            f"{base64.b64encode(token_bytes(t)).decode()} {i}\n"
            for t, i in sorted(vocab.items(), key=lambda kv: kv[1])
            if t != "<|endoftext|>"
        )
    )
    from_ranks = BPETokenizer(path=str(ranks), special_tokens={"eos": "<|endoftext|>"})
    lines = [line for _, ls in _lines(200) for line in ls]
    assert ids_of(from_ranks, lines) == ids_of(gpt2, lines)


@settings(max_examples=25, deadline=None)
@given(text=st.text(max_size=30))
def test_byte_level_bpe_decode_inverts_encode(gpt2, text):
    assert gpt2.decode(gpt2.encode(text)["input_ids"]) == text


# ----- SentencePiece -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spm_model():
    return SentencePieceTokenizer(path=str(shared_file(SPM_MODEL)))


def test_sentencepiece_ids_equal_the_library_on_every_corpus(spm_model, spm_reference):
    ref = spm_reference
    for name, lines in _lines(SAMPLE_LINES):
        ours = ids_of(spm_model, lines)
        theirs = ref.encode(lines)
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert a == b, f"{name} line {i}: {lines[i]!r}"
    assert ids_of(spm_model, ODD) == ref.encode(ODD)
    assert spm_model.unk_id == ref.unk_id() and spm_model.bos_id == ref.bos_id()


@pytest.fixture(scope="module")
def spm_reference():
    spm = pytest.importorskip("sentencepiece")
    return spm.SentencePieceProcessor(model_file=str(shared_file(SPM_MODEL)))


@settings(max_examples=50, deadline=None)
@given(text=st.text(max_size=40))
def test_sentencepiece_with_byte_fallback_round_trips_any_text(spm_model, spm_reference, text):
    ids = spm_model.encode(text)["input_ids"]
    # This model normalizes whitespace (runs collapse, ends trimmed), as the library does.
    assert spm_model.decode(ids) == spm_reference.decode(ids)


def test_sentencepiece_decode_equals_the_library_leading_spaces_included(spm_model, spm_reference):
    ref = spm_reference
    for name, lines in _lines(SAMPLE_LINES):
        ids = ref.encode(lines)
        ours = spm_model.batch_decode(ids)
        for i, (a, b) in enumerate(zip(ours, (ref.decode(x) for x in ids), strict=True)):
            assert a == b, f"{name} line {i}: {lines[i]!r}"
    # A leading space is its own piece ('▁', '▁Robert'): the library keeps one space.
    for text in [" Robert", "  two", " ", "\n x", " = Valkyria = "]:
        assert spm_model.decode(ref.encode(text)) == ref.decode(ref.encode(text)) == text
    # An unknown piece reads as the library writes it, wherever it is.
    unk = ref.unk_id()
    for ids in ([unk, 1234], [1234, unk, 1234]):
        assert spm_model.decode(ids) == ref.decode(ids)


@pytest.fixture(scope="module")
def trained_spm():
    from tfllm.data.embedded import embedded_corpus

    tok = SentencePieceTokenizer(vocab_size=1000)
    tok.adapt([embedded_corpus()[0]])
    return tok


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=40))
def test_trained_sentencepiece_with_byte_fallback_is_lossless(trained_spm, text):
    assert trained_spm.decode(trained_spm.encode(text)["input_ids"]) == text


def test_sentencepiece_decodes_byte_pieces_and_unicode(spm_model):
    for text in ["日本語のテキスト", "emoji 🙂 ok", "plain words"]:
        assert spm_model.decode(spm_model.encode(text)["input_ids"]) == text


# ----- WordPiece -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    return str(minilm_tokenizer_json())


def test_wordpiece_equals_hf_on_special_tokens_unicode_whitespace_and_sigma(minilm):
    tokenizers = pytest.importorskip("tokenizers")
    ref = tokenizers.Tokenizer.from_file(minilm)
    ref.no_padding()
    tok = WordPieceTokenizer(path=minilm)
    cases = [
        "[CLS] hello [SEP]",  # special tokens written in text, found before lower-casing
        "x[SEP]y",
        "[MASK]ed",
        "[UNK] x",
        "a [PAD] b",
        "[cls] is not special",
        "a\u2028b\u2029c",  # line and paragraph separators are whitespace
        "ΣΑΣ σας ὈΔΥΣΣΕΎΣ",  # Σ lower-cases to σ, also at the end of a word
        "\x85a\x0bb\x0cc",
        "İstanbul",
    ]
    for text in cases:
        assert tok.encode(text)["input_ids"] == ref.encode(text, add_special_tokens=False).ids, text


def test_wordpiece_ids_equal_hf_tokenizers_on_a_bert_vocabulary(minilm):
    tokenizers = pytest.importorskip("tokenizers")
    ref = tokenizers.Tokenizer.from_file(minilm)
    ref.no_padding()
    ref.no_truncation()
    ours = WordPieceTokenizer(path=minilm)
    assert ours.lowercase and ours.strip_accents
    for name, lines in _lines(SAMPLE_LINES):
        mine = ids_of(ours, lines)
        theirs = [e.ids[1:-1] for e in ref.encode_batch(lines)]  # drop [CLS] ... [SEP]
        for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
            assert a == b, f"{name} line {i}: {lines[i]!r}"
    assert ids_of(ours, ODD[:-1]) == [e.ids[1:-1] for e in ref.encode_batch(ODD[:-1])]
    assert ours.decode(
        ours.encode("Hello, unaffable world!")["input_ids"]
    ) == "hello, unaffable world!".replace(",", " ,").replace("!", " !")


# ----- every subword tokenizer through the harness, training and export --------------------
def trained(kind, texts, **kw):
    cls = {
        "bpe": BPETokenizer,
        "wordpiece": WordPieceTokenizer,
        "sentencepiece": SentencePieceTokenizer,
    }[kind]
    # SentencePiece with byte fallback needs room for 256 byte pieces plus the characters.
    tok = cls(vocab_size=kw.pop("vocab_size", 900 if kind == "sentencepiece" else 300), **kw)
    assert not tok.is_trained()
    tok.adapt(texts)
    assert tok.is_trained()
    return tok


@pytest.fixture(scope="module")
def play():
    from tfllm.data.embedded import embedded_corpus

    return embedded_corpus()[0]  # one play from the embedded corpus, ~100k characters


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "sentencepiece"])
def test_trained_tokenizers_pass_the_harness(kind, play):
    text = play
    tok = trained(kind, [text], vocab_size=1000)
    samples = ["BERNARDO:\nWho's there?\n\n", "Long live the king!", ""]
    run_tokenizer_test(tok, samples, lossless=kind != "wordpiece")
    if kind == "wordpiece":
        assert tok.decode(tok.encode("long live the king!")["input_ids"]) == "long live the king !"
    ids = tok.encode(text[:2000])["input_ids"]
    assert len(ids) < 2000 * 0.5  # subwords compress the text they were trained on


EXPORT_CHECK = textwrap.dedent("""
    import sys, json
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (what TF Serving links)
    assert "tfllm" not in sys.modules and "keras_hub" not in sys.modules
    answers, texts = {}, json.loads(sys.argv[2])
    for path in json.loads(sys.argv[1]):
        out = tf.saved_model.load(path).signatures["serving_default"](tf.constant(texts))
        answers[path] = {"ids": out["ids"].numpy().tolist(),
                         "text": [t.decode() for t in out["text"].numpy()]}
    print(json.dumps(answers))
""")
KINDS = ["bpe", "wordpiece", "sentencepiece", "char", "byte"]


def save_tokenizer_model(tok, path):
    """A SavedModel whose `serving_default` tokenizes strings and detokenizes the ids."""
    module = tf.Module()
    module.tokenizer = tok

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
    def serve(strings):
        ids = tok(strings)
        return {"ids": ids.to_tensor(-1), "text": tok.detokenize(ids)}

    tf.saved_model.save(module, path, signatures={"serving_default": serve})


def test_saved_models_run_in_a_process_with_only_tensorflow_and_tf_text(tiny_corpus, tmp_path):
    """Each kind's tokenizer saved in a SavedModel, all loaded in one fresh process (one
    TensorFlow start) that imports neither tfllm nor keras-hub, answer as in this process."""
    from tfllm import registry

    texts = ["BERNARDO:\nWho's there?", "unseen wørds ☕", "", " [CLS] ΣΑΣ\u2028x [SEP]"]
    expected = {}
    for kind in KINDS:
        if kind in ("char", "byte"):
            tok = registry.get("tokenizer", kind)()
            if kind == "char":
                tok.adapt([tiny_corpus.read_text()])
        else:
            tok = trained(kind, [tiny_corpus.read_text()])
        path = str(tmp_path / kind)
        save_tokenizer_model(tok, path)
        ids = tok(tf.constant(texts))
        expected[path] = {
            "ids": ids.to_tensor(-1).numpy().tolist(),
            "text": [t.decode() for t in tok.detokenize(ids).numpy()],
        }
    proc = subprocess.run(
        [sys.executable, "-c", EXPORT_CHECK, json.dumps(list(expected)), json.dumps(texts)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for path, answer in expected.items():
        assert got[path] == answer, path


@pytest.mark.slow  # three CLI processes; the trained tokenizers pass the harness by default
def test_tokenizer_train_command_then_train_and_generate_with_it(tiny_corpus, tmp_path):
    from conftest import run_cli

    out = tmp_path / "bpe"
    proc = run_cli(
        [
            "tokenizer",
            "train",
            "tokenizer=bpe",
            "tokenizer.vocab_size=300",
            f"data.path={tiny_corpus}",
            f"out={out}",
        ]
    )
    assert "300 tokens" in proc.stdout or "tokens to" in proc.stdout
    loaded = load_tokenizer(str(out))
    assert isinstance(loaded, BPETokenizer) and (out / "merges.txt").exists()
    direct = BPETokenizer(path=str(out))
    sample = tf.constant(["Who's there?"])
    assert direct(sample).to_list() == loaded(sample).to_list()
    run = tmp_path / "run"
    run_cli(
        [
            "train",
            "debug=fast",
            "tokenizer=bpe",
            f"tokenizer.path={out}",
            f"data.path={tiny_corpus}",
            f"run_dir={run}",
            "trainer.max_steps=60",
            "schedule.peak_learning_rate=3e-3",
        ]
    )
    saved = load_tokenizer(str(run / "tokenizer"))
    assert saved(sample).to_list() == loaded(sample).to_list()
    text = run_cli(
        ["generate", f"ckpt={run}", "prompt=BERNARDO:", "max_new_tokens=20", "temperature=0.8"]
    ).stdout
    assert text.startswith("BERNARDO:") and len(text) > len("BERNARDO:") + 5


def test_bad_tokenizer_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        BPETokenizer(path=str(tmp_path / "missing"))
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        BPETokenizer(path=str(tmp_path))
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("not-a-rank-line\n")
    with pytest.raises(ValueError, match="bad.tiktoken:1"):
        BPETokenizer(path=str(bad))
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="SentencePiece"):
        SentencePieceTokenizer(path=str(junk))
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer().adapt(["text"])
    with pytest.raises(ValueError, match="vocab_size=100: sentencepiece could not train"):
        SentencePieceTokenizer(vocab_size=100).adapt(["some text " * 50])


def test_invalid_utf8_and_long_inputs_do_not_crash(gpt2, spm_model):
    bad = tf.constant([b"ok \xff\xfe end", b""])
    for tok in (gpt2, spm_model):
        ids = tok(bad).to_list()
        assert ids[1] == []
        text = tok.detokenize(tf.ragged.constant(ids)).numpy()[0].decode("utf-8")
        assert text.startswith("ok") and text.endswith("end")
    long = "word " * 20000
    ids = gpt2.encode(long)["input_ids"]
    assert ids == hf_gpt2().encode(long).ids and len(ids) == 20001  # the last space stands alone
    assert np.all(np.array(ids) < gpt2.vocabulary_size)


def test_gguf_vocabulary_loads_with_its_special_tokens(gpt2, tmp_path):
    gguf = pytest.importorskip("gguf")
    tokens = gpt2.get_vocabulary()
    writer = gguf.GGUFWriter(str(tmp_path / "tiny.gguf"), "llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_merges(gpt2.merges)
    writer.add_bos_token_id(50256)
    writer.add_eos_token_id(50256)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    from_gguf = BPETokenizer(path=str(tmp_path / "tiny.gguf"))
    assert from_gguf.special_tokens == {"bos": "<|endoftext|>", "eos": "<|endoftext|>"}
    lines = [line for _, ls in _lines(100) for line in ls]
    assert ids_of(from_gguf, lines) == ids_of(gpt2, lines)
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\x00" * 8)
    with pytest.raises(ValueError, match="bad.gguf"):
        BPETokenizer(path=str(tmp_path / "bad.gguf"))


def test_split_digits_matches_hf_digits_then_byte_level(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import pre_tokenizers

    ref = hf_gpt2()
    ref.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    ours = BPETokenizer(path=str(gpt2_dir(tmp_path)), split_digits=True)
    texts = ["In 1984, 3.14159 and 42 apples", "x2y 007 ", "٣ digits", "no numbers", ""]
    assert ids_of(ours, texts) == [e.ids for e in ref.encode_batch(texts)]
    assert tokenizers is not None
