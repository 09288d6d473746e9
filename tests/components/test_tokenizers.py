"""char and byte tokenizers: the shared tokenizer harness, round trips, odd input."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from tfllm.components.tokenizers.byte import ByteTokenizer
from tfllm.components.tokenizers.char import CharTokenizer
from tfllm.testing import run_tokenizer_test

TEXTS = ["hello world", "", "To be, or not to be:\nthat is the question.", "ünïcödé ✓ 漢字 🙂"]


def test_byte_tokenizer_harness():
    run_tokenizer_test(ByteTokenizer(), TEXTS)


def test_char_tokenizer_harness():
    tok = CharTokenizer()
    tok.adapt(TEXTS)
    run_tokenizer_test(tok, TEXTS)


def test_char_ids_follow_code_point_order_and_unknowns_map_to_unk():
    tok = CharTokenizer(vocabulary="cab\n")
    assert tok.get_vocabulary()[:4] == ["\n", "a", "b", "c"]
    assert tok.encode_one("abz") == [1, 2, tok.unk_id]
    assert tok.decode([1, 2, tok.unk_id]) == "ab"  # specials skipped
    assert tok.decode([1, 2, tok.unk_id], skip_special_tokens=False) == "ab<unk>"
    assert tok.vocabulary_size == 4 + 3


def test_decoding_with_and_without_specials_keeps_one_traced_graph_each():
    # The first calls run eagerly, later ones a traced graph per setting: interleaved, each
    # setting keeps its own answer once both are traced.
    tok = CharTokenizer(vocabulary="cab\n")
    ids = [[1, 2, tok.unk_id], [3, tok.unk_id]]
    for _ in range(4):
        assert tok.batch_decode(ids) == ["ab", "c"]
        assert tok.batch_decode(ids, skip_special_tokens=False) == ["ab<unk>", "c<unk>"]
    for skip in (True, False):
        assert ("traced", f"detokenize(skip_special_tokens={skip})") in tok._tables


def test_char_tokenizer_needs_a_vocabulary():
    with pytest.raises(ValueError, match="adapt"):
        CharTokenizer().vocabulary_size  # noqa: B018
    with pytest.raises(ValueError, match="single characters"):
        CharTokenizer(vocabulary=["ab"])


def test_encode_batches_pads_truncates_and_masks():
    tok = ByteTokenizer()
    out = tok.encode(["ab", "abcd"], add_bos=True, padding=True)
    assert out["input_ids"].tolist() == [
        [tok.bos_id, 97, 98, tok.pad_id, tok.pad_id],
        [tok.bos_id, 97, 98, 99, 100],
    ]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    out = tok.encode(["abcdef"], max_length=3, truncation=True, padding="max_length")
    assert out["input_ids"].tolist() == [[97, 98, 99]]
    assert tok.batch_decode([[97, 98, tok.pad_id], [99]]) == ["ab", "c"]
    assert tok.tokenize("hé") == ["h", "\ufffd", "\ufffd"]  # single bytes of a 2-byte char
    assert tok.convert_tokens_to_ids(["<eos>"]) == [tok.eos_id]
    with pytest.raises(ValueError, match="mask"):
        ByteTokenizer(special_tokens={"mask": "<m>", "mystery": "<x>"})


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=60))
def test_byte_decode_inverts_encode_for_any_unicode(text):
    tok = ByteTokenizer()
    assert tok.decode(tok.encode(text)["input_ids"]) == text


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="abc xyz\n", max_size=40))
def test_char_decode_inverts_encode_within_its_vocabulary(text):
    tok = CharTokenizer(vocabulary="abcxyz \n")
    assert tok.decode(tok.encode(text)["input_ids"]) == text


def test_invalid_utf8_and_long_strings_do_not_crash():
    tok = ByteTokenizer()
    bad = b"ok \xff\xfe end"
    ids = tok(tf.constant([bad])).to_list()[0]
    assert ids == list(bad)  # bytes pass through as they are
    assert tok.decode(ids) == "ok \ufffd\ufffd end"  # decoding repairs to valid UTF-8
    char = CharTokenizer(vocabulary="ok end")
    assert char(tf.constant([bad])).to_list()[0][3] == char.unk_id  # U+FFFD is unknown
    long = "abc " * 50_000
    assert len(tok.encode(long)["input_ids"]) == 200_000
    assert tok.encode("")["input_ids"] == []
    assert tok.batch_decode([]) == []
    assert tok.decode(np.array([], np.int32)) == ""
