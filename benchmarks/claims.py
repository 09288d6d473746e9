"""Claim checking and grounded answers over a knowledge base: SmolLM2-135M-Instruct + MiniLM.

    python benchmarks/claims.py [--claims-per-label 70] [--questions 32] [--k 2]

The data is built here from public text, nothing committed (WikiText-2's validation split,
CC BY-SA 3.0, `../shared/data/wikitext-2/valid.txt`):

- Knowledge base: the paragraphs of the first half of the split's articles (detokenized:
  `@-@` joins, sentences with `<unk>` kept as they are), chunked into 60-word passages (10
  overlapping), embedded with MiniLM-L6-v2 (`tfllm pretrained pull minilm-l6-v2`), plus a file
  of generated facts about invented places (below).
- Claims, three labels in equal numbers, each a sentence of 8-40 words that names a year:
  `supported`: the sentence as the knowledge base holds it; `refuted`: the same sentence with
  its year moved by 3-60 years (a minimal alteration); `not enough information`: a sentence
  from an article of the other half, which the knowledge base does not hold. A supported or
  refuted claim's gold passage is the passage that holds the sentence whole (recall@k).
- Grounded questions: invented facts ("The Tarvish Bridge in Kellmere was built in 1743 by
  Amelia Rook."), generated from fixed name lists with a seed, so that no model knows them;
  each asks who built it or when, and is answered from the knowledge base or without it.

Reported: accuracy and macro-F1 of `tfllm.evaluation.claims.ClaimChecker` (label likelihood,
calibrated, the question asked in the model's chat template) with retrieved evidence, the
same model on the claim alone, the majority label,
retrieval recall@k of the gold passage; and how often a grounded chat answer (`ChatSession`
with a retriever) contains the fact's answer, against the same chat without the knowledge
base. Writes benchmarks/results/claims.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [HERE]
from results_file import save_results  # noqa: E402

WIKI = os.path.join(HERE, "..", "..", "shared", "data", "wikitext-2", "valid.txt")
YEAR = re.compile(r"\b(1[0-9]{3}|20[0-2][0-9])\b")
FIRST = ["Amelia", "Tomas", "Ines", "Barnaby", "Odile", "Casimir", "Wren", "Lucan"]
LAST = ["Rook", "Feldt", "Marrow", "Quell", "Ashdown", "Voss", "Tilbury", "Karsk"]
PLACES = ["Kellmere", "Dunhollow", "Varrick", "Ospenford", "Lyrris", "Caddow", "Presk", "Hamel"]
NAMES = ["Tarvish", "Zorvath", "Elmwick", "Quorran", "Belgast", "Sorrel", "Nimmet", "Aldous"]
THINGS = ["Bridge", "Lighthouse", "Observatory", "Library", "Clock Tower", "Mill", "Chapel"]


def detokenize(text: str) -> str:
    text = text.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    text = re.sub(r" ([.,;:)!?'])", r"\1", text)
    return re.sub(r"\( ", "(", text).strip()


def articles(path: str) -> list[tuple[str, list[str]]]:
    """`(title, paragraphs)` per article of the tokenized WikiText file."""
    out: list[tuple[str, list[str]]] = []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        heading = re.fullmatch(r"= ([^=].*[^=]) =", line)
        if heading:
            out.append((heading[1].strip(), []))
        elif line and not line.startswith("=") and out:
            out[-1][1].append(detokenize(line))
    return [(t, ps) for t, ps in out if ps]


def sentences(paragraph: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=\.)\s+(?=[A-Z])", paragraph) if s.strip()]


def year_sentences(paragraphs: list[str]) -> list[str]:
    return [
        s
        for p in paragraphs
        for s in sentences(p)
        if YEAR.search(s) and 8 <= len(s.split()) <= 40 and "<unk>" not in s
    ]


def alter_year(sentence: str, rng: random.Random) -> str:
    match = YEAR.search(sentence)
    year = int(match[0]) + rng.choice([-1, 1]) * rng.randint(3, 60)
    return sentence[: match.start()] + str(year) + sentence[match.end() :]


def invented_facts(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    facts, used = [], set()
    while len(facts) < n:
        name, thing, place = rng.choice(NAMES), rng.choice(THINGS), rng.choice(PLACES)
        if (name, thing) in used:
            continue
        used.add((name, thing))
        person = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        year = str(rng.randint(1650, 1890))
        text = f"The {name} {thing} in {place} was built in {year} by {person}."
        if len(facts) % 2 == 0:
            question, answer = f"When was the {name} {thing} in {place} built?", year
        else:
            question, answer = f"Who built the {name} {thing} in {place}?", person
        facts.append({"text": text, "question": question, "answer": answer})
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims-per-label", type=int, default=70)
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    from tfllm.evaluation.claims import ClaimChecker, claim_report
    from tfllm.generation.chat import ChatSession
    from tfllm.generation.settings import GenerationConfig
    from tfllm.pretrained.packages import pull
    from tfllm.retrieval.knowledge_base import KnowledgeBase, embedder_from_run
    from tfllm.runs import load_run

    rng = random.Random(args.seed)
    every = articles(WIKI)
    half = len(every) // 2
    known, unknown = every[:half], every[half:]
    facts = invented_facts(args.questions, args.seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as docs:
        for i, (title, paragraphs) in enumerate(known):
            with open(os.path.join(docs, f"{i:03d}.txt"), "w", encoding="utf-8") as f:
                f.write(f"{title}\n\n" + "\n\n".join(paragraphs))
        with open(os.path.join(docs, "invented.jsonl"), "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": fact["text"]}) + "\n" for fact in facts)
        embed = embedder_from_run(str(pull("minilm-l6-v2")))
        kb = KnowledgeBase.build(
            [os.path.join(docs, "*.txt"), os.path.join(docs, "*.jsonl")],
            embed,
            max_words=60,
            overlap=10,
        )
    build_seconds = time.perf_counter() - start
    print(f"knowledge base: {len(kb.passages)} passages in {build_seconds:.0f} s", file=sys.stderr)

    n = args.claims_per_label
    held = [s for _, ps in known for s in year_sentences(ps)]
    held = [s for s in held if any(s in p.text for p in kb.passages)]  # whole in one passage
    rng.shuffle(held)
    others = [s for _, ps in unknown for s in year_sentences(ps)]
    rng.shuffle(others)
    if len(held) < 2 * n or len(others) < n:
        raise SystemExit(f"too few sentences: {len(held)} held, {len(others)} others")

    def gold(sentence: str) -> str:
        return next(p.id for p in kb.passages if sentence in p.text)

    rows = [{"claim": s, "label": "supported", "gold": gold(s)} for s in held[:n]]
    rows += [
        {"claim": alter_year(s, rng), "label": "refuted", "gold": gold(s)} for s in held[n : 2 * n]
    ]
    rows += [{"claim": s, "label": "not enough information"} for s in others[:n]]

    model, tokenizer, cfg = load_run(str(pull("smollm2-135m-instruct")))
    # Asked in its chat template (`CHAT_CLAIM_TEMPLATE`), as `eval=claims` asks a chat model.
    checker = ClaimChecker(model, tokenizer, kb, k=args.k, chat_template=cfg["chat"]["template"])
    start = time.perf_counter()
    with_kb = claim_report(checker, rows, retrieve=True)
    alone = claim_report(checker, [{**r, "evidence": ""} for r in rows], retrieve=False)
    claim_seconds = time.perf_counter() - start
    print(f"claims: {claim_seconds:.0f} s", file=sys.stderr)

    config = GenerationConfig(max_new_tokens=32)
    template = cfg["chat"]["template"]

    def answers(grounded: bool) -> list[str]:
        retriever = (lambda q: [h.passage for h in kb.search(q, args.k)]) if grounded else None
        session = ChatSession(model, tokenizer, template, config=config, retriever=retriever)
        out = []
        for fact in facts:
            session.reset()  # each question on its own
            out.append(session.reply(fact["question"]))
        return out

    start = time.perf_counter()
    grounded, plain = answers(True), answers(False)
    qa_seconds = time.perf_counter() - start

    def contains(replies: list[str]) -> float:
        hits = [f["answer"].lower() in r.lower() for f, r in zip(facts, replies, strict=True)]
        return sum(hits) / len(hits)

    qa_recall = sum(
        any(f["text"] == h.passage.text for h in kb.search(f["question"], args.k)) for f in facts
    ) / len(facts)
    result = {
        "args": vars(args),
        "passages": len(kb.passages),
        "claims": with_kb,
        "claims_alone": alone,
        "qa": {
            "questions": len(facts),
            "grounded_contains_answer": contains(grounded),
            "plain_contains_answer": contains(plain),
            f"fact_recall@{args.k}": qa_recall,
            "examples": [
                {"question": f["question"], "answer": f["answer"], "grounded": g, "plain": p}
                for f, g, p in list(zip(facts, grounded, plain, strict=True))[:4]
            ],
        },
        "seconds": {"kb_build": build_seconds, "claims": claim_seconds, "qa": qa_seconds},
    }
    k, m = args.k, with_kb["majority"]
    lines = [
        "# Claim checking and grounded answers: SmolLM2-135M-Instruct + MiniLM-L6-v2 retrieval",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores. Knowledge base: "
        f"{len(kb.passages)} passages (WikiText-2 validation, first {half} articles, 60-word "
        f"passages; plus {len(facts)} invented facts). {len(rows)} claims, {n} per label; "
        f"evidence: the top {k} passages. Command: `python benchmarks/claims.py "
        f"--claims-per-label {n} --questions {args.questions} --k {k}`",
        "",
        "| claim checking | accuracy | macro-F1 | recall@k of the gold passage |",
        "|---|---|---|---|",
        f"| with retrieved evidence | {with_kb['accuracy']:.3f} | {with_kb['macro_f1']:.3f} | "
        f"{with_kb[f'recall@{k}']:.3f} |",
        f"| the claim alone | {alone['accuracy']:.3f} | {alone['macro_f1']:.3f} | |",
        f"| majority label | {m:.3f} | {2 * m / (m + 1) / len(checker.labels):.3f} | |",
        "",
        "Confusion with evidence (rows: true supported / refuted / not enough information; "
        f"columns: predicted): {with_kb['confusion']}",
        "",
        "| grounded questions | answers containing the fact |",
        "|---|---|",
        f"| chat with the knowledge base (top {k}) | {contains(grounded):.3f} |",
        f"| the same chat without it | {contains(plain):.3f} |",
        f"| the fact among the retrieved passages | {qa_recall:.3f} |",
        "",
        f"Seconds: knowledge base {build_seconds:.0f}, claims {claim_seconds:.0f}, "
        f"questions {qa_seconds:.0f}.",
    ]
    save_results("claims", "\n".join(lines), result)


if __name__ == "__main__":
    main()
