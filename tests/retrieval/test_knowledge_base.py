"""Knowledge bases, grounded chat and claim checking, with small real models.

The embedder is a real sentence-embedding run (a tiny encoder written as a run directory, as
`tfllm pretrained pull minilm-l6-v2` writes MiniLM's); the language model is a tiny trained
character GPT. They know nothing, so these tests check the mechanism: what is retrieved, what
the model is sent, what is reported. `benchmarks/claims.py` measures quality with MiniLM and
SmolLM2.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

WORDS = (
    "[PAD] [UNK] [CLS] [SEP] [MASK] the a of is in and to was . , paris france capital city "
    "river seine berlin germany rhine tower eiffel built 1889 wall fell 1989 north sea flows "
    "through largest what where when which"
).split()
DOCS = {
    "paris.txt": "Paris is the capital of France . The Seine flows through the city .\n\n"
    "The Eiffel tower was built in 1889 .",
    "berlin.txt": "Berlin is the capital of Germany . The wall fell in 1989 .",
}


@pytest.fixture(scope="module")
def embedder_run(tmp_path_factory):
    """A tiny sentence-embedding run directory (random weights, real model and tokenizer)."""
    from tfllm.components.tokenizers.wordpiece import WordPieceTokenizer
    from tfllm.models.builder import build_model
    from tfllm.runs import write_run

    out = tmp_path_factory.mktemp("embedder") / "run"
    tokenizer = WordPieceTokenizer(vocabulary=WORDS)
    cfg = {
        "model": {
            "name": "encoder",
            "vocabulary_size": len(WORDS),
            "num_layers": 1,
            "hidden_dim": 32,
            "num_heads": 2,
            "intermediate_dim": 64,
            "max_sequence_length": 64,
            "dropout": 0.0,
            "type_vocabulary_size": 2,
            "embedding_norm": True,
        },
        "attention": {"name": "mha"},
        "positional": {"name": "learned"},
        "ffn": {"name": "mlp", "activation": "gelu"},
        "norm": {"name": "layernorm"},
        "head": {"name": "lm", "tie_embeddings": True},
        "task": {"name": "sentence_embedding", "pooling": "mean", "normalize": True},
        "tokenizer": {"name": "wordpiece"},
        "embedding": {"max_length": 32},
    }
    specials = tokenizer.special_token_ids()
    model = build_model(cfg, tokenizer.vocabulary_size, specials, None, tokenizer)
    model(np.zeros((1, 4), np.int32))
    write_run(model, tokenizer, cfg, str(out))
    return out


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    for name, text in DOCS.items():
        (root / name).write_text(text, encoding="utf-8")
    rows = [{"id": "tower", "text": "the rhine flows to the north sea ."}]
    (root / "facts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def kb(embedder_run, docs, tmp_path_factory):
    out = tmp_path_factory.mktemp("kb") / "kb"
    proc = run_cli(
        ["kb", "build", f"docs={docs}/*.txt,{docs}/*.jsonl", f"out={out}"]
        + [f"embedder={embedder_run}", "max_words=8", "overlap=2"]
    )
    assert "passages from 3 documents" in proc.stdout, proc.stdout
    return out


def test_documents_are_chunked_with_overlap_and_paragraphs():
    from tfllm.retrieval.documents import chunk_text

    words = " ".join(str(i) for i in range(10))
    assert chunk_text(words, max_words=4, overlap=1) == ["0 1 2 3", "3 4 5 6", "6 7 8 9"]
    assert chunk_text("a b\n\nc d", max_words=4, overlap=0) == ["a b", "c d"]
    with pytest.raises(ValueError, match="overlap"):
        chunk_text(words, max_words=4, overlap=4)


def test_a_built_knowledge_base_finds_each_passage_by_its_own_text(kb):
    from tfllm.retrieval.knowledge_base import KnowledgeBase

    base = KnowledgeBase.load(str(kb))
    manifest = json.loads((kb / "kb.json").read_text())
    assert manifest["passages"] == len(base.passages) >= 4
    assert manifest["dimensions"] == 32 and manifest["max_words"] == 8
    assert np.allclose(np.linalg.norm(base.vectors, axis=1), 1.0, atol=1e-5)
    ids = {p.id for p in base.passages}
    assert any(i.endswith("facts.jsonl:tower#0") for i in ids), ids
    for passage in base.passages:  # a passage's own text is its nearest neighbour
        hits = base.search(passage.text, k=2)
        assert hits[0].passage == passage and hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert hits[0].rank == 1 and hits[1].rank == 2 and hits[1].score <= hits[0].score


def test_kb_search_command_and_clear_errors(kb, tmp_path):
    first = DOCS["berlin.txt"].split(" . ")[0]
    proc = run_cli(["kb", "search", f"kb={kb}", f"query={first}", "k=2", "format=json"])
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2]
    assert rows[0]["id"].endswith("berlin.txt#0") and rows[0]["score"] > rows[1]["score"]
    bad = run_cli(["kb", "search", f"kb={tmp_path}", "query=x"], check=False)
    assert bad.returncode == 2 and "is not a knowledge base" in bad.stderr
    missing = run_cli(["kb", "build", f"docs={tmp_path}/*.md", f"out={tmp_path}/k"], check=False)
    assert missing.returncode == 2 and "no file matches" in missing.stderr
    usage = run_cli(["kb", "nothing"], check=False)
    assert usage.returncode == 2 and "tfllm kb build" in usage.stderr


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    from tfllm.runs import load_run

    root = tmp_path_factory.mktemp("lm")
    corpus = root / "corpus.txt"
    corpus.write_text(" ".join(DOCS.values()).lower() * 20, encoding="utf-8")
    import tfllm

    tfllm.train(  # in this process: the CLI is tested elsewhere
        "debug=fast",
        f"data.path={corpus}",
        "model.max_sequence_length=256",
        "trainer.max_steps=4",
        "trainer.callbacks=[]",
        run_dir=str(root / "run"),
    )
    return (*load_run(str(root / "run")), root / "run")


def test_grounded_chat_sends_the_retrieved_passages_and_keeps_history_plain(kb, lm):
    from tfllm.generation.chat import ChatSession
    from tfllm.generation.settings import GenerationConfig
    from tfllm.retrieval.knowledge_base import KnowledgeBase

    model, tokenizer, _, _ = lm
    base = KnowledgeBase.load(str(kb))
    template = "{% for m in messages %}{{ m.content }}\n{% endfor %}"
    question = "where is the seine"
    session = ChatSession(
        model,
        tokenizer,
        template,
        config=GenerationConfig(max_new_tokens=3),
        retriever=lambda q: [h.passage for h in base.search(q, 2)],
        grounding_template="{passages}\nq: {question}\na:",
    )
    session.reply(question)
    want = [h.passage for h in base.search(question, 2)]
    assert session.sources == want
    assert session.sent == f"[1] {want[0].text}\n[2] {want[1].text}\nq: {question}\na:\n"
    assert session.history[0] == {"role": "user", "content": question}
    session.reply("and the tower")  # the next turn: the old question is sent plain
    assert session.sent.startswith(f"{question}\n")
    assert "q: and the tower\na:" in session.sent
    assert session.cited == []  # three characters of an untrained model cite nothing


def test_citations_are_read_from_the_answer():
    from tfllm.retrieval.grounding import citations, grounded_question

    assert citations("As [2] says, and [1]; [2] again, [7] is not one.", 3) == [2, 1]
    with pytest.raises(ValueError, match="question"):
        grounded_question("q", [], "{passages} only")


def test_claim_checking_reports_against_the_majority_baseline(kb, lm, tmp_path):
    from tfllm.evaluation.claims import ClaimChecker, claim_report
    from tfllm.retrieval.knowledge_base import KnowledgeBase

    model, tokenizer, _, run = lm
    base = KnowledgeBase.load(str(kb))
    rows = [
        {"claim": "paris is the capital of france .", "label": "supported"},
        {"claim": "berlin is the capital of france .", "label": "refuted"},
        {"claim": "the tower was built in 1989 .", "label": "refuted"},
    ]
    gold = base.search(rows[0]["claim"], 1)[0].passage.id
    rows[0]["gold"] = gold
    checker = ClaimChecker(model, tokenizer, base, k=2)
    verdicts = checker.check([r["claim"] for r in rows])
    assert [len(v.evidence) for v in verdicts] == [2, 2, 2]
    assert verdicts[0].evidence[0].id == gold
    for v in verdicts:
        assert v.label in checker.labels and set(v.scores) == set(checker.labels)
        assert v.label == max(v.scores, key=v.scores.get)
    from tfllm.evaluation.claims import CHAT_CLAIM_TEMPLATE, CHAT_LABELS

    chatty = ClaimChecker(model, tokenizer, base, chat_template="<u>{{ messages[0].content }}</u>")
    asked = CHAT_CLAIM_TEMPLATE.format(evidence="e", claim="c")
    assert chatty.prompt("c", "e") == f"<u>{asked}</u>"
    assert chatty.classifier.verbalizers == CHAT_LABELS
    report = claim_report(checker, rows)
    assert report["claims"] == 3 and report["majority"] == pytest.approx(2 / 3)
    assert report["recall@2"] == 1.0
    assert sum(map(sum, report["confusion"])) == 3
    # The same through `tfllm.evaluate(..., "eval=claims")` (what `tfllm evaluate` runs).
    data = tmp_path / "claims.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    import tfllm

    overrides = ["eval=claims", f"eval.kb={kb}", "eval.k=2", f"data.path={data}"]
    result = tfllm.evaluate(str(run), *overrides)
    assert result["eval"] == "claims"
    assert result["with evidence"]["recall@2"] == 1.0
    assert result["claim alone"]["claims"] == 3
