"""Prepared datasets: `tfllm data prepare` sources, resumable preparation, the manifest's checks,
and training input streamed from shards (pure in the step, split across real workers)."""

import json
import os
import random
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import SigtermAt, checkpoint_state, kill_at_checkpoint, train_here

from tfllm import registry
from tfllm.data import prepare as prepare_module
from tfllm.data.permutation import permute
from tfllm.data.prepare import is_validation, prepare
from tfllm.data.prepared import PreparedDataset
from tfllm.data.text import TextDataset
from tfllm.registry import ConfigError
from tfllm.training.preparation import prepare_tokenizer

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def documents(seed, n=30, upper=False):
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))) for _ in range(8)]
        text = "\n".join(lines) + "\n"
        docs.append(text.upper() if upper else text)
    return docs


def byte_tokenizer():
    registry.ensure_loaded()
    specials = {"pad": "<pad>", "bos": "<bos>", "eos": "<eos>"}
    return registry.build("tokenizer", {"name": "byte", "special_tokens": specials})


def write_texts(folder, docs):
    folder.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(docs):
        (folder / f"{i:03d}.txt").write_text(doc, encoding="utf-8")
    return folder


def split_tokens(out):
    """Every train and validation token of a prepared dataset, in order."""
    dataset = PreparedDataset(str(out), sequence_length=4, batch_size=1)
    splits = dataset.token_splits(None)
    return {
        name: np.concatenate([s.read(0, len(s)) for s in split.stores])
        for name, split in (("train", splits.train), ("val", splits.val))
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_texts(tmp_path_factory.mktemp("corpus"), documents(0))


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "ds"
    prepare(str(corpus), str(out), byte_tokenizer(), val_fraction=0.2, workers=1)
    return out


def test_every_source_format_gives_the_tokens_of_the_equivalent_text_files(corpus, tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = documents(0)
    tokenizer = byte_tokenizer()
    # Text files, tokenized by two worker processes, a unit of work per few files.
    text_out = tmp_path / "text"
    prepare(str(corpus), str(text_out), tokenizer, val_fraction=0.2, workers=2, piece_mb=0.004)
    manifest = json.loads((text_out / "manifest.json").read_text())
    assert len(manifest["splits"]["train"]["shards"]) > 2
    expected = split_tokens(text_out)
    # What TextDataset makes of the same documents: each followed by <eos>.
    train_docs = [d for d in docs if not is_validation(d, 0, 0.2)]
    val_docs = [d for d in docs if is_validation(d, 0, 0.2)]
    assert train_docs and val_docs
    in_memory = TextDataset(sequence_length=4, batch_size=1).tokenize(tokenizer, train_docs)
    np.testing.assert_array_equal(expected["train"], in_memory)

    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs)))
    parquet = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"body": docs}), parquet, row_group_size=7)
    hf = tmp_path / "hf"
    datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(hf))
    for name, source, field in [
        ("jsonl", str(jsonl), "text"),
        ("parquet", str(parquet), "body"),
        ("hf", f"hf:{hf}", "text"),
    ]:
        out = tmp_path / f"prepared_{name}"
        prepare(
            source,
            str(out),
            tokenizer,
            val_fraction=0.2,
            text_field=field,
            workers=1,
            piece_mb=0.002,
        )
        got = split_tokens(out)
        for split in ("train", "val"):
            np.testing.assert_array_equal(got[split], expected[split], err_msg=f"{name} {split}")


def test_a_text_file_split_into_pieces_keeps_every_line_document(tmp_path):
    docs = [line for d in documents(1, n=20) for line in d.splitlines()]
    big = tmp_path / "lines.txt"
    big.write_text("\n".join(docs) + "\n")
    tokenizer = byte_tokenizer()
    out = tmp_path / "out"
    prepare(
        str(big),
        str(out),
        tokenizer,
        documents="lines",
        val_fraction=0.0,
        piece_mb=0.001,
        workers=1,
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["splits"]["train"]["shards"]) > 3  # the file was cut into pieces
    assert manifest["splits"]["train"]["documents"] == len(docs)
    expected = np.concatenate([np.append(tokenizer.encode_one(d), tokenizer.eos_id) for d in docs])
    np.testing.assert_array_equal(split_tokens(out)["train"], expected)


def test_an_interrupted_preparation_redoes_only_unfinished_units(
    corpus, tmp_path, monkeypatch, caplog
):
    tokenizer = byte_tokenizer()
    real = prepare_module.prepare_unit
    calls = []

    def dies_after_three(job):
        if len(calls) == 3:
            raise KeyboardInterrupt  # as Ctrl-C (or a kill) in the middle of the work
        calls.append(job["unit"])
        return real(job)

    out = tmp_path / "out"
    args = dict(val_fraction=0.2, workers=1, piece_mb=0.003)
    monkeypatch.setattr(prepare_module, "prepare_unit", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        prepare(str(corpus), str(out), tokenizer, **args)
    assert not (out / "manifest.json").exists()
    with pytest.raises(ConfigError, match="preparation did not finish"):
        PreparedDataset(str(out), sequence_length=4, batch_size=1)
    with pytest.raises(ConfigError, match="unfinished preparation with other"):
        prepare(str(corpus), str(out), tokenizer, **{**args, "val_fraction": 0.3})

    monkeypatch.setattr(prepare_module, "prepare_unit", real)
    caplog.set_level("INFO", logger="tfllm.data.prepare")
    prepare(str(corpus), str(out), tokenizer, **args)
    assert "resuming: 3 of" in caplog.text
    assert not (out / ".work").exists()
    fresh = tmp_path / "fresh"
    prepare(str(corpus), str(fresh), tokenizer, **args)
    a, b = split_tokens(out), split_tokens(fresh)
    for split in ("train", "val"):
        np.testing.assert_array_equal(a[split], b[split])
    with pytest.raises(ConfigError, match="already holds a prepared dataset"):
        prepare(str(corpus), str(out), tokenizer, **{**args, "seed": 1})


def test_a_run_whose_tokenizer_differs_from_the_manifest_is_refused(prepared, tmp_path):
    dataset = PreparedDataset(str(prepared), sequence_length=8, batch_size=2)
    run = tmp_path / "run"
    char = registry.build("tokenizer", {"name": "char", "special_tokens": {"eos": "<eos>"}})
    char.adapt(["alpha beta"])
    char.save_to_directory(str(run / "tokenizer"))
    cfg = {"tokenizer": {"name": "char"}}
    with pytest.raises(
        ConfigError,
        match=r"prepared with a ByteTokenizer \(259 tokens.*is a CharTokenizer \(9 tokens",
    ):
        prepare_tokenizer(cfg, dataset, str(run))
    # A fresh run takes the prepared tokenizer; resuming with it passes the check.
    fresh = prepare_tokenizer(cfg, dataset, str(tmp_path / "fresh"))
    assert type(fresh).__name__ == "ByteTokenizer"
    shutil.rmtree(run / "tokenizer")
    fresh.save_to_directory(str(run / "tokenizer"))
    assert prepare_tokenizer(cfg, dataset, str(run)).vocabulary_size == 259
    # A damaged tokenizer folder given to prepare is one error naming it (from the workers).
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text('{"x":')
    with pytest.raises(ConfigError, match=f"tokenizer: {broken}/tokenizer.json .* is unreadable"):
        prepare(str(prepared), str(tmp_path / "never"), str(broken), workers=1)


def test_a_truncated_or_altered_shard_is_detected(prepared, tmp_path):
    from tfllm.commands.data import verify

    damaged = tmp_path / "damaged"
    shutil.copytree(prepared, damaged)
    manifest = json.loads((damaged / "manifest.json").read_text())
    shard = damaged / manifest["splits"]["train"]["shards"][0]["file"]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=r"shard .*00000.tokens holds .* truncated"):
        PreparedDataset(str(damaged), sequence_length=8, batch_size=2).token_splits(None)
    shard.write_bytes(data[:-2] + b"\x01\x00")  # right size, other content
    assert verify(str(damaged), manifest) == [
        "train/00000.tokens differs from the manifest (sha256)"
    ]
    assert verify(str(prepared), manifest) == []


def test_batches_are_a_pure_function_of_the_step_and_an_epoch_visits_each_block_once(prepared):
    t, g = 8, 4
    dataset = PreparedDataset(str(prepared), sequence_length=t, batch_size=g, seed=3)
    train = dataset.token_splits(None).train
    store = train.stores[0]
    per_epoch = dataset.steps_per_epoch(len(store))
    ctx = tf.distribute.InputContext()
    run = [b["token_ids"].numpy() for b in dataset.train_dataset(train, ctx, 0, per_epoch + 3)]
    resumed = [b["token_ids"].numpy() for b in dataset.train_dataset(train, ctx, 5, per_epoch - 2)]
    for a, b in zip(run[5:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)
    # Epoch 0: distinct blocks at one offset, as many as the epoch's batches hold.
    starts = np.concatenate([dataset.window_starts(train, s)[1] for s in range(per_epoch)])
    assert len(set(starts.tolist())) == per_epoch * g
    assert len(set((starts % t).tolist())) == 1
    first = np.stack([store.read(int(s), t) for s in starts[:g]])
    np.testing.assert_array_equal(first, run[0])
    next_epoch = dataset.window_starts(train, per_epoch)[1]
    assert not np.array_equal(next_epoch, starts[:g])  # a new order each epoch
    # The labels are the next tokens.
    batch = next(iter(dataset.train_dataset(train, ctx, 0, 1)))
    np.testing.assert_array_equal(
        batch["labels"].numpy()[:, :-1], batch["token_ids"].numpy()[:, 1:]
    )
    # Validation: the held-out documents in order.
    val = dataset.token_splits(None).val
    ds, n = dataset.eval_dataset(val, ctx)
    flat = np.concatenate([b["token_ids"].numpy().reshape(-1) for b in ds])
    np.testing.assert_array_equal(flat, val.stores[0].read(0, n * g * t))


def test_the_permutation_is_a_bijection_for_any_size():
    for n in (1, 2, 3, 7, 64, 65, 1000, 4097):
        image = permute(np.arange(n), n, 11, 2)
        assert sorted(image.tolist()) == list(range(n))
    assert not np.array_equal(
        permute(np.arange(100), 100, 1, 0), permute(np.arange(100), 100, 2, 0)
    )


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_on_localhost_together_see_every_window_of_an_epoch_once(prepared, tmp_path):
    g, t = 6, 8
    workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    procs = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(config), TF_CPP_MIN_LOG_LEVEL="3")
        out = tmp_path / f"worker{index}.json"
        script = os.path.join(os.path.dirname(__file__), "epoch_worker.py")
        procs.append(
            subprocess.Popen(
                [sys.executable, script, str(prepared), str(out), str(g)],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    seen = [json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2)]
    dataset = PreparedDataset(str(prepared), sequence_length=t, batch_size=g)
    train = dataset.token_splits(None).train
    steps = dataset.steps_per_epoch(len(train))
    assert seen[0]["steps"] == seen[1]["steps"] == steps
    starts = np.concatenate([dataset.window_starts(train, s)[1] for s in range(steps)])
    epoch = sorted(train.stores[0].read(int(s), t + 1).tolist() for s in starts)
    both = seen[0]["windows"] + seen[1]["windows"]
    assert len(seen[0]["windows"]) == len(seen[1]["windows"]) == steps * g // 2
    assert sorted(both) == epoch  # together: each window of the epoch, once (as a multiset)


def test_a_mixture_samples_each_dataset_by_weight(prepared, tmp_path):
    upper = tmp_path / "upper"
    prepare(
        str(write_texts(tmp_path / "u", documents(5, upper=True))),
        str(upper),
        byte_tokenizer(),
        workers=1,
    )
    with pytest.raises(ConfigError, match="sampling=random"):
        PreparedDataset([str(prepared), str(upper)], sequence_length=8, batch_size=4)
    with pytest.raises(ConfigError, match="data.weights"):
        PreparedDataset(
            [str(prepared), str(upper)],
            sequence_length=8,
            batch_size=4,
            weights=[1.0],
            sampling="random",
        )
    dataset = PreparedDataset(
        [str(prepared), str(upper)],
        sequence_length=8,
        batch_size=8,
        weights=[1, 3],
        sampling="random",
    )
    train = dataset.token_splits(None).train
    ds = dataset.train_dataset(train, tf.distribute.InputContext(), 0, 40)
    rows = np.concatenate([b["token_ids"].numpy() for b in ds])
    capitals = np.isin(rows, np.arange(ord("A"), ord("Z") + 1)).any(axis=1)
    lower = np.isin(rows, np.arange(ord("a"), ord("z") + 1)).any(axis=1)
    assert not (capitals & lower).any()  # every window comes from one dataset
    assert 0.65 < capitals.mean() < 0.85  # 3 of 4 from the upper-case one (320 windows)
    # A mixture's datasets share one tokenizer.
    other = tmp_path / "other"
    char = registry.build("tokenizer", {"name": "char", "special_tokens": {"eos": "<eos>"}})
    char.adapt(["".join(WORDS)])
    prepare(str(tmp_path / "u"), str(other), char, workers=1)
    with pytest.raises(ConfigError, match="one tokenizer"):
        PreparedDataset(
            [str(prepared), str(other)], sequence_length=8, batch_size=4, sampling="random"
        )


def train_overrides(data):
    return [
        "debug=fast",
        "data=prepared",
        f"data.path={data}",
        "model.dropout=0.1",
        "trainer.max_steps=100",
        "trainer.checkpoint_every=20",
        "trainer.eval_every=100",
        "trainer.log_every=20",
        "trainer.callbacks=[]",
        "data.batch_size=8",
    ]


def train_cmd(data, run_dir):
    return [
        sys.executable,
        "-m",
        "tfllm.cli",
        "train",
        *train_overrides(data),
        f"run_dir={run_dir}",
    ]


def test_a_run_on_prepared_data_stopped_and_resumed_equals_uninterrupted(prepared, tmp_path):
    from train_configs import train_config

    from tfllm.training.trainer import Trainer

    cfg = train_config(
        prepared,
        "data=prepared",
        "model.dropout=0.1",  # the dropout stream resumes too
        "data.batch_size=8",
        "trainer.max_steps=30",
        "trainer.checkpoint_every=10",
        "trainer.eval_every=30",
        "trainer.callbacks=[]",
    )
    stopped = Trainer(cfg, str(tmp_path / "stopped"))
    stopped.callbacks.append(SigtermAt(10))
    assert stopped.fit()["preempted_at_step"] == 15  # the next boundary of 5 steps
    resumed = Trainer(cfg, str(tmp_path / "stopped"))
    resumed.fit()
    assert resumed.start_step == 15 and resumed.step == 30
    straight = Trainer(cfg, str(tmp_path / "straight"))
    straight.fit()
    assert resumed.weights_digest() == straight.weights_digest()


# Out of the default run (its time budget): the test above stops and resumes a run on prepared
# data in this process; this one kills `tfllm train` and resumes it with the command.
@pytest.mark.slow
def test_prepare_then_train_killed_and_resumed_equals_uninterrupted(corpus, tmp_path):
    data = tmp_path / "data"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfllm.cli",
            "data",
            "prepare",
            f"source={corpus}",
            f"out={data}",
            "tokenizer=char",
            "val_fraction=0.2",
            "workers=1",
            "piece_mb=0.01",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        "trained a char tokenizer" in done.stdout
        and "train with: tfllm train data=prepared" in done.stdout
    )
    full, killed = tmp_path / "full", tmp_path / "killed"
    train_here(train_overrides(data), full)  # uninterrupted, in this process
    kill_at_checkpoint(train_cmd(data, killed), killed, 20)
    resumed = subprocess.run(train_cmd(data, killed), capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = json.loads((full / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert a["weights_sha256"] == b["weights_sha256"]
    assert a["val_loss"] == b["val_loss"]
    state, resumed_state = checkpoint_state(full), checkpoint_state(killed)
    assert state.keys() == resumed_state.keys() and len(state) > 50  # weights, moments, step
    for key in state:
        np.testing.assert_array_equal(state[key], resumed_state[key], err_msg=key)
    # The run kept the prepared data's tokenizer.
    assert (killed / "tokenizer" / "tokenizer.json").read_text() == (
        data / "tokenizer" / "tokenizer.json"
    ).read_text()


def test_fine_tuning_data_reads_parquet_and_datasets_as_it_reads_json_lines(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tfllm.data.chat import read_conversations
    from tfllm.data.preferences import read_preferences

    chats = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(5)
    ]
    pairs = [{"prompt": f"p{i}", "chosen": "yes", "rejected": "no"} for i in range(4)]
    for name, rows, read in (
        ("chat", chats, read_conversations),
        ("pairs", pairs, read_preferences),
    ):
        jsonl = tmp_path / f"{name}.jsonl"
        jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
        parquet = tmp_path / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), parquet)
        saved = tmp_path / f"{name}_hf"
        datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(saved))
        want = read(str(jsonl))
        assert read(str(parquet)) == want
        assert read(f"hf:{saved}:train") == want
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "p", "chosen": "x"}]), bad)
    with pytest.raises(ConfigError, match=r"bad.parquet:1: needs string 'prompt', 'chosen'"):
        read_preferences(str(bad))
    with pytest.raises(ConfigError, match=r"has splits \['train'\], not 'test'"):
        read_preferences(f"hf:{tmp_path / 'pairs_hf'}:test")
