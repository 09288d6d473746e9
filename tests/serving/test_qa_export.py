"""Extractive QA exports and serves: questions and contexts in, answer spans (text, character
offsets, score) out, long contexts read in overlapping windows; served answers equal
`SpanExtractor.answer`'s, over gRPC, REST and `tfllm client`."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from conftest import export_here, predict_error, run_cli, serve_process, train_here

grpc = pytest.importorskip("grpc")
pytest.importorskip("tensorflow_serving.apis")

NAMES = ["Anna", "Boris", "Carla", "Dmitri", "Elena"]
PLACES = ["Oslo", "Rome", "Kyiv", "Lima"]
FILLER = "the a went to saw and then later with of is".split()


def squad_rows(n, seed):
    """Who is mentioned? A cased name (sometimes with a place) among lower-case filler."""
    gen = random.Random(seed)
    rows = []
    for _ in range(n):
        name = gen.choice(NAMES) + ("" if gen.random() < 0.5 else " " + gen.choice(PLACES))
        words = [gen.choice(FILLER) for _ in range(gen.randint(3, 8))]
        at = gen.randint(0, len(words))
        context = " ".join(words[:at] + [name] + words[at:])
        rows.append(
            {
                "question": "Who is mentioned?",
                "context": context,
                "answers": {"text": [name], "answer_start": [context.index(name)]},
            }
        )
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


LONG = " ".join(["the a went to saw"] * 6) + " Carla Rome " + " ".join(["and then"] * 5)


@pytest.fixture(scope="module")
def qa(tmp_path_factory):
    root = tmp_path_factory.mktemp("qa")
    run = root / "run"
    val = squad_rows(24, 1)
    train_here(
        [
            "task=extractive_qa",
            "model=bert_tiny",
            "model.num_layers=1",
            "model.hidden_dim=64",
            "model.dropout=0.0",
            "tokenizer=wordpiece",
            "tokenizer.vocab_size=200",
            f"data.train={write_jsonl(root / 'train.jsonl', squad_rows(400, 0))}",
            f"data.val={write_jsonl(root / 'val.jsonl', val)}",
            "data.sequence_length=32",
            "data.max_question_length=8",
            "data.stride=6",
            "data.batch_size=16",
            "trainer.max_steps=80",
            "trainer.eval_every=80",
            "trainer.checkpoint_every=80",
            "trainer.jit_compile=false",
            "trainer.callbacks=[]",
            "schedule.warmup_steps=10",
            "schedule.peak_learning_rate=3e-3",
        ],
        run,
    )
    # The trainer's span metrics on the validation split (chance is below 1/10).
    logs = json.loads((run / "metrics.json").read_text())
    assert logs["val_exact_match"] > 0.9 and logs["val_span_f1"] >= logs["val_exact_match"]
    result = export_here(run, root / "exports", "qa", qa_max_windows=4)
    compared = result.validation["compared"]
    assert "answers to 3 questions (4 windows): identical spans" in compared, compared
    from tfllm.runs import load_run
    from tfllm.tasks.qa_reading import ReadingRule

    model, tokenizer, _ = load_run(str(run))
    questions = [r["question"] for r in val] + ["Who is in the long one?"]
    contexts = [r["context"] for r in val] + [LONG]
    rule = ReadingRule(32, 8, 6)
    want = model.answer(tokenizer, questions, contexts, rule)  # batches of 16 and 9
    # Later calls, of any batch, run the function the first traced.
    again = model.answer(tokenizer, questions[:3], contexts[:3], rule)
    assert [(a.text, a.start, a.end) for a in again] == [(w.text, w.start, w.end) for w in want[:3]]
    assert model._reader(tokenizer, rule).experimental_get_tracing_count() == 1
    with serve_process(root / "exports" / "qa", "qa") as (server, ports):
        yield ports, (questions, contexts, want, [r["answers"]["text"][0] for r in val])
        assert server.poll() is None


def test_served_answers_equal_the_keras_model_and_find_the_names(qa):
    from tfllm.serving.client import Client

    ports, (questions, contexts, want, gold) = qa
    for transport, port in (("grpc", ports[0]), ("rest", ports[1])):
        with Client(port=port, model="qa", transport=transport) as client:
            got = client.answer(questions, contexts)
        assert [(a["answer"], a["start"], a["end"]) for a in got] == [
            (w.text, w.start, w.end) for w in want
        ]
        np.testing.assert_allclose([a["score"] for a in got], [w.score for w in want], atol=1e-5)
    for answer, context in zip(want, contexts, strict=True):
        assert context[answer.start : answer.end] == answer.text
        assert 0.0 < answer.score <= 1.0
    # Trained on cased names with a lower-casing tokenizer, served answers are the cased text.
    exact = np.mean([w.text == g for w, g in zip(want, gold, strict=False)])
    assert exact >= 0.8, [(w.text, g) for w, g in zip(want, gold, strict=False)]
    proc = run_cli(
        ["client", "model=qa", f"port={ports[0]}", "question=Who?", "context=the Anna went"]
    )
    assert set(json.loads(proc.stdout)) == {"answer", "start", "end", "score"}


def test_a_malformed_rest_request_is_400_and_the_server_answers_after(qa):
    import urllib.error
    import urllib.request

    ports, (questions, contexts, want, _) = qa
    url = f"http://127.0.0.1:{ports[1]}/v1/models/qa:predict"
    for body in (
        {"signature_name": "answer", "inputs": {"questions": ["who?"], "contexts": [LONG * 3]}},
        {"signature_name": "answer", "inputs": {"questions": ["who?"]}},
    ):
        request = urllib.request.Request(url, json.dumps(body).encode(), method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=60)
        assert info.value.code == 400
    body = {
        "signature_name": "answer",
        "inputs": {"questions": questions[:1], "contexts": contexts[:1]},
    }
    request = urllib.request.Request(url, json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        outputs = json.loads(response.read())["outputs"]
    assert outputs["answers"] == [want[0].text]


def test_a_long_context_is_read_in_windows():
    """The name sits past the first window: only a later window can hold it."""
    import tensorflow as tf

    from tfllm.components.tokenizers.char import CharTokenizer
    from tfllm.tasks.qa_reading import ReadingRule, read_windows

    tokenizer = CharTokenizer(vocabulary="abcdefghijklmnopqrstuvwxyz ?")
    rule = ReadingRule(sequence_length=20, max_question_length=4, stride=5)
    windows = read_windows(tokenizer, tf.constant(["who?"]), tf.constant(["a" * 30]), rule)
    # No [CLS]; eos separates: 20 - 4 question tokens - 2 = 14 context tokens a row, 9 new per
    # window: 0-13, 9-22, 18-29.
    assert tokenizer.boundary_ids() == (None, tokenizer.eos_id)
    assert windows.counts.numpy().tolist() == [3]
    index = windows.context_index.to_list()
    assert [[k for k in row if k >= 0] for row in index] == [
        list(range(0, 14)),
        list(range(9, 23)),
        list(range(18, 30)),
    ]
    assert all(row[:5] == [-1] * 5 and row[-1] == -1 for row in index)
    assert all(row[4] == row[-1] == tokenizer.eos_id for row in windows.ids.to_list())


@pytest.mark.parametrize(
    "questions, contexts, message",
    [
        (["who?"], [LONG * 3], "over the limit of 4 windows"),
        (["who?"], [" \t "], "a context has no words"),
        (["who?", "what?"], ["Anna went"], "one entry each"),
        ([""], ["Anna went"], "a string is empty"),
    ],
)
def test_malformed_answer_requests_are_invalid_argument(qa, questions, contexts, message):
    ports, _ = qa
    error = predict_error(ports[0], "qa", "answer", questions=questions, contexts=contexts)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()
