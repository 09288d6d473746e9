"""Token classification (CoNLL) and extractive question answering (SQuAD) heads and tasks."""

import itertools
import json
import random

import numpy as np
import pytest
import tensorflow as tf

from tfllm.config import compose
from tfllm.registry import ConfigError
from tfllm.training.trainer import Trainer

NAMES = ["anna", "boris", "carla", "dmitri", "elena"]
PLACES = ["paris", "oslo", "lima", "rome", "kyiv"]
WORDS = ["the", "saw", "met", "in", "and", "went", "to", "with", "a", "friend"]
TAGS = ["O", "B-PER", "B-LOC"]


def write_conll(path, n, seed):
    """Sentences whose tags follow from the words: names are B-PER, places B-LOC."""
    gen = random.Random(seed)
    lines = ["-DOCSTART- -X- O", ""]
    for _ in range(n):
        for _ in range(gen.randint(4, 9)):
            kind = gen.random()
            if kind < 0.2:
                lines.append(f"{gen.choice(NAMES)} NNP B-PER")
            elif kind < 0.4:
                lines.append(f"{gen.choice(PLACES)} NNP B-LOC")
            else:
                lines.append(f"{gen.choice(WORDS)} X O")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_conll_encoding_labels_first_tokens_only(tmp_path):
    from tfllm.components.tokenizers.char import CharTokenizer
    from tfllm.data.conll import CoNLLDataset

    path = tmp_path / "a.conll"
    path.write_text("anna NNP B-PER\nsaw X O\n\nparis NNP B-LOC\n", encoding="utf-8")
    data = CoNLLDataset(train=str(path), val=str(path), labels=TAGS, sequence_length=12)
    tokenizer = CharTokenizer(vocabulary="abcdefghijklmnopqrstuvwxyz ")
    split = data.encode(tokenizer, str(path))
    assert tokenizer.decode(split.ids[0][split.mask[0]]) == "anna saw"
    # Tags sit on the first letter of each word ("a" of anna, "s" of saw, not the space).
    np.testing.assert_array_equal(np.nonzero(split.weights[0])[0], [0, 5])
    np.testing.assert_array_equal(split.labels[0][[0, 5]], [1, 0])
    # Cut to 12 tokens: a word that does not fit carries no loss.
    assert split.weights[1].sum() == 1 and split.labels[1][0] == 2


def test_conll_errors_name_the_file_and_line(tmp_path):
    from tfllm.data.conll import read_conll

    path = tmp_path / "bad.conll"
    path.write_text("anna B-PER\nsaw B-VERB\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.conll:2: tag 'B-VERB' is not one of"):
        read_conll(str(path), TAGS)
    path.write_text("anna B-PER\nsaw\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.conll:2: a word and a tag expected"):
        read_conll(str(path), TAGS)


def test_token_classifier_learns_tags(tmp_path):
    train = write_conll(tmp_path / "train.conll", 400, 0)
    val = write_conll(tmp_path / "val.conll", 60, 1)
    cfg = compose(
        "config",
        [
            "model=bert_tiny",
            "task=token_classify",
            f"task.labels=[{','.join(TAGS)}]",
            "tokenizer=char",
            f"data.train={train}",
            f"data.val={val}",
            "data.sequence_length=64",
            "data.batch_size=16",
            "model.hidden_dim=64",
            "model.dropout=0.0",
            "trainer.max_steps=150",
            "trainer.jit_compile=false",
            "trainer.eval_every=150",
            "trainer.checkpoint_every=150",
            "schedule.warmup_steps=10",
            "schedule.peak_learning_rate=3e-3",
            f"run_dir={tmp_path / 'run'}",
        ],
    )
    trainer = Trainer(cfg, str(tmp_path / "run"))
    logs = trainer.fit()
    assert logs["val_accuracy"] > 0.95 and logs["val_macro_f1"] > 0.9
    assert trainer.last_confusion.shape == (3, 3)
    # Every labelled word of the validation split was counted once.
    words = sum(1 for line in val.read_text().splitlines() if line and "DOCSTART" not in line)
    assert trainer.last_confusion.sum() == words


# ----- extractive QA ----------------------------------------------------------------------------
def test_best_spans_is_the_brute_force_argmax():
    from tfllm.tasks.extractive_qa import best_spans

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 9, 2)).astype("float32")
    context = np.zeros((4, 9), bool)
    context[:, 3:8] = True
    starts, ends = best_spans(tf.constant(logits), tf.constant(context), 3)
    for b in range(4):
        candidates = [
            (logits[b, i, 0] + logits[b, j, 1], i, j)
            for i, j in itertools.product(range(3, 8), repeat=2)
            if i <= j < i + 3
        ]
        _, i, j = max(candidates)
        assert (int(starts[b]), int(ends[b])) == (i, j)


def write_squad(path, n, seed):
    """Who is mentioned? A one- or two-word name somewhere among filler words."""
    gen = random.Random(seed)
    data = []
    for k in range(n):
        name = gen.choice(NAMES) + ("" if gen.random() < 0.5 else " " + gen.choice(PLACES))
        words = [gen.choice(WORDS) for _ in range(gen.randint(4, 9))]
        at = gen.randint(0, len(words))
        before = " ".join(words[:at])
        context = " ".join(words[:at] + [name] + words[at:])
        start = len(before) + (1 if before else 0)
        qa = {"id": str(k), "question": "who is mentioned?"}
        qa["answers"] = [{"text": name, "answer_start": start}]
        data.append({"paragraphs": [{"context": context, "qas": [qa]}]})
    path.write_text(json.dumps({"data": data}), encoding="utf-8")
    return path


def test_squad_spans_decode_to_the_answers(tmp_path):
    from tfllm.components.tokenizers.char import CharTokenizer
    from tfllm.data.squad import SQuADDataset, read_squad

    path = write_squad(tmp_path / "q.json", 20, 0)
    tokenizer = CharTokenizer(vocabulary="abcdefghijklmnopqrstuvwxyz .?")
    data = SQuADDataset(train=str(path), val=str(path), sequence_length=96)
    split = data.encode(tokenizer, str(path))
    examples = read_squad(str(path))
    assert len(split) == 20
    for i, e in enumerate(examples):
        span = split.ids[i, split.start[i] : split.end[i] + 1]
        assert tokenizer.decode(span) == e.answer
        assert split.context_mask[i, split.start[i] : split.end[i] + 1].all()
    # Rows too short for a context read it in overlapping windows: every answer is kept, in
    # each window that holds all of it.
    short = SQuADDataset(
        train=str(path), val=str(path), sequence_length=40, max_question_length=8, stride=12
    )
    rows = short.encode(tokenizer, str(path))
    assert len(rows) > 20
    answers = {e.answer for e in examples}
    spans = [
        tokenizer.decode(rows.ids[i, rows.start[i] : rows.end[i] + 1]) for i in range(len(rows))
    ]
    assert set(spans) == answers
    assert rows.context_mask.sum(axis=1).max() == 40 - 8 - 1 - (rows.ids[0, 8] != 0)
    with pytest.raises(ConfigError, match="data.stride=30 leaves no new context tokens"):
        SQuADDataset(
            train=str(path), val=str(path), sequence_length=40, max_question_length=8, stride=30
        ).encode(tokenizer, str(path))


def test_squad_aligns_cased_answers_with_a_lower_casing_tokenizer(tmp_path):
    """The answer's tokens come from character offsets, not from decoding them back."""
    from tfllm.components.tokenizers.wordpiece import WordPieceTokenizer
    from tfllm.data.squad import SQuADDataset

    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "who", "lives", "in", "anna", "oslo", "?"]
    vocabulary += [".", "ka", "##ren", "##ina", "cafe"]
    tokenizer = WordPieceTokenizer(vocabulary=vocabulary)
    assert tokenizer.lowercase
    context = "Anna Karenina lives in Oslo. Café"
    rows = [
        {
            "question": "Who lives in Oslo?",
            "context": context,
            "answers": {"text": [text], "answer_start": [context.index(text)]},
        }
        for text in ("Anna Karenina", "Karenina", "Oslo", "Café")
    ]
    path = tmp_path / "cased.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    split = SQuADDataset(
        train=str(path), val=str(path), sequence_length=24, max_question_length=8
    ).encode(tokenizer, str(path))
    spans = [
        tokenizer.convert_ids_to_tokens(split.ids[i, split.start[i] : split.end[i] + 1].tolist())
        for i in range(len(split))
    ]
    assert spans == [["anna", "ka", "##ren", "##ina"], ["ka", "##ren", "##ina"], ["oslo"], ["cafe"]]


def test_squad_errors_name_the_question(tmp_path):
    from tfllm.data.squad import read_squad

    path = tmp_path / "bad.json"
    bad = {
        "paragraphs": [
            {
                "context": "anna lives in oslo.",
                "qas": [
                    {
                        "id": "q7",
                        "question": "where?",
                        "answers": [{"text": "lima", "answer_start": 14}],
                    }
                ],
            }
        ]
    }
    path.write_text(json.dumps({"data": [bad]}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.json: question q7: the answer 'lima' is not"):
        read_squad(str(path))


# Out of the default run (its time budget): tests/serving/test_qa_export.py trains the same
# model on the same kind of data and checks these metrics before serving it.
@pytest.mark.slow
def test_extractive_qa_learns_to_point_at_the_answer(tmp_path):
    train = write_squad(tmp_path / "train.json", 400, 0)
    val = write_squad(tmp_path / "val.json", 64, 1)
    cfg = compose(
        "config",
        [
            "model=bert_tiny",
            "task=extractive_qa",
            "tokenizer=wordpiece",  # trained on the data: a word is a token
            "tokenizer.vocab_size=200",
            f"data.train={train}",
            f"data.val={val}",
            "data.sequence_length=32",
            "data.max_question_length=8",
            "data.batch_size=16",
            "model.hidden_dim=64",
            "model.dropout=0.0",
            "trainer.max_steps=100",
            "trainer.jit_compile=false",
            "trainer.eval_every=100",
            "trainer.checkpoint_every=100",
            "schedule.warmup_steps=20",
            "schedule.peak_learning_rate=3e-3",
            f"run_dir={tmp_path / 'run'}",
        ],
    )
    logs = Trainer(cfg, str(tmp_path / "run")).fit()
    # Chance is below 1/10 (contexts of 5 to 11 words, answers of one or two).
    assert logs["val_exact_match"] > 0.9 and logs["val_span_f1"] >= logs["val_exact_match"]
