"""Text corpora to batches: splits, determinism by step, sharding, errors."""

import numpy as np
import pytest
import tensorflow as tf

from tfllm.components.tokenizers.char import CharTokenizer
from tfllm.data.embedded import embedded_corpus
from tfllm.data.text import TextDataset
from tfllm.registry import ConfigError

SINGLE = tf.distribute.InputContext(1, 0, 1)


def batches(ds, n):
    return [{k: v.numpy() for k, v in b.items()} for b in ds.take(n)]


def dataset(path, **kw):
    kw.setdefault("sequence_length", 8)
    kw.setdefault("batch_size", 4)
    return TextDataset(path=str(path), **kw)


def test_split_is_nanogpts_first_90_percent(tiny_corpus):
    text = tiny_corpus.read_text()
    train, val = dataset(tiny_corpus).texts()
    cut = int(len(text) * 0.9)
    assert "".join(train) == text[:cut] and "".join(val) == text[cut:]


@pytest.mark.parametrize("sampling", ["epochs", "random"])
def test_batches_are_next_token_windows_and_a_pure_function_of_the_step(tiny_corpus, sampling):
    ds = dataset(tiny_corpus, sampling=sampling)
    tok = CharTokenizer()
    tok.adapt(ds.texts()[0])
    tokens = ds.token_splits(tok).train
    all_steps = batches(ds.train_dataset(tokens, SINGLE, 0, 30), 30)
    for b in all_steps:
        assert b["token_ids"].shape == (4, 8)
        np.testing.assert_array_equal(b["token_ids"][:, 1:], b["labels"][:, :-1])
    resumed = batches(ds.train_dataset(tokens, SINGLE, 17, 13), 13)
    for a, b in zip(all_steps[17:], resumed, strict=True):
        np.testing.assert_array_equal(a["token_ids"], b["token_ids"])
    assert not np.array_equal(all_steps[0]["token_ids"], all_steps[1]["token_ids"])


@pytest.mark.parametrize("sampling", ["epochs", "random"])
def test_shards_partition_the_global_batch(tiny_corpus, sampling):
    ds = dataset(tiny_corpus, sampling=sampling)
    tok = CharTokenizer()
    tok.adapt(ds.texts()[0])
    tokens = ds.token_splits(tok).train
    whole = batches(ds.train_dataset(tokens, SINGLE, 0, 5), 5)
    # Two workers with one replica each: each pipeline yields half of every global batch.
    parts = [
        batches(ds.train_dataset(tokens, tf.distribute.InputContext(2, i, 2), 0, 5), 5)
        for i in range(2)
    ]
    for step in range(5):
        joined = np.concatenate([parts[0][step]["token_ids"], parts[1][step]["token_ids"]])
        np.testing.assert_array_equal(joined, whole[step]["token_ids"])
    # One worker with two replicas: consecutive elements are the two replica halves.
    local = batches(ds.train_dataset(tokens, tf.distribute.InputContext(1, 0, 2), 0, 5), 10)
    np.testing.assert_array_equal(
        np.concatenate([local[0]["token_ids"], local[1]["token_ids"]]), whole[0]["token_ids"]
    )


def test_eval_batches_cover_validation_in_order(tiny_corpus):
    ds = dataset(tiny_corpus)
    tok = CharTokenizer()
    tok.adapt(ds.texts()[0])
    val = ds.token_splits(tok).val
    evalds, n = ds.eval_dataset(val, SINGLE)
    got = batches(evalds, n)
    assert n == ((len(val) - 1) // 8) // 4 and len(got) == n
    np.testing.assert_array_equal(got[0]["token_ids"][0], val[:8])
    np.testing.assert_array_equal(got[0]["labels"][1], val[9:17])


def test_documents_are_separated_by_eos(tmp_path):
    for i, text in enumerate(["abc", "de"]):
        (tmp_path / f"{i}.txt").write_text(text)
    ds = TextDataset(path=str(tmp_path), sequence_length=2, batch_size=1, train_fraction=1.0)
    tok = CharTokenizer(vocabulary="abcde")
    ids = ds.tokenize(tok, ds.texts()[0])
    assert ids.tolist() == [0, 1, 2, tok.eos_id, 3, 4, tok.eos_id]


def test_bad_inputs_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="data.path: no such file"):
        TextDataset(path=str(tmp_path / "missing.txt"), sequence_length=4, batch_size=2).texts()
    (tmp_path / "short.txt").write_text("too short")
    ds = TextDataset(path=str(tmp_path / "short.txt"), sequence_length=64, batch_size=2)
    with pytest.raises(ConfigError, match="sequence_length"):
        ds.token_splits(CharTokenizer(vocabulary="too short"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ConfigError, match="not valid utf-8"):
        TextDataset(path=str(tmp_path / "latin1.txt"), sequence_length=2, batch_size=1).texts()
    with pytest.raises(ConfigError, match="batch_size"):
        TextDataset(sequence_length=4, batch_size=0)


def test_embedded_corpus_is_plain_play_text():
    docs = embedded_corpus()
    assert len(docs) > 30
    hamlet = next(d for d in docs if "Elsinore" in d or "Hamlet:" in d)
    assert "Hamlet:" in hamlet and "**" not in hamlet and "#" not in hamlet
    assert sum(len(d) for d in docs) > 3_000_000
