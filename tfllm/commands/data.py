"""`tfllm data prepare source=... out=DIR tokenizer=NAME|FOLDER` and `tfllm data inspect DIR`:
corpora tokenized once into shards that `data=prepared` streams (docs/data.md)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from tfllm.commands.common import CommandError, key_values, user_error

USAGE = (
    "usage: tfllm data prepare source=FILE|DIR|GLOB|hf:DATASET[,...] out=DIR "
    "tokenizer=NAME|FOLDER [format=auto|text|jsonl|parquet|hf] [text_field=text] "
    "[documents=file|paragraphs|lines] [val_fraction=0.01] [seed=0] [workers=N] [piece_mb=32] "
    "[vocab_size=N] [tokenizer_sample_mb=16] | tfllm data inspect DIR [verify=false]"
)

PREPARE_ARGUMENTS: dict[str, str | None] = {
    "source": None,
    "out": None,
    "tokenizer": None,
    "format": "auto",
    "text_field": "text",
    "documents": "file",
    "val_fraction": "0.01",
    "seed": "0",
    "workers": "",
    "piece_mb": "32",
    "vocab_size": "",
    "tokenizer_sample_mb": "16",
    "encoding": "utf-8",
}
INSPECT_ARGUMENTS: dict[str, str | None] = {"verify": "false"}


def _number(args: dict, key: str, kind: type = int) -> Any:
    try:
        return kind(args[key])
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise CommandError(f"{key}: must be {what}, got {args[key]!r}") from None


def resolve_tokenizer(args: dict, sources: list[str]) -> Any:
    """A saved tokenizer's folder (a tokenizer folder, a run's or pulled model's `tokenizer/`),
    or a trained tokenizer: a registered tokenizer's name, trained on the first
    `tokenizer_sample_mb` of the documents if it needs training. A folder is loaded only by the
    worker processes, so this one never imports TensorFlow for it."""
    from tfllm.runs import tokenizer_dir

    spec = args["tokenizer"]
    folder = os.path.expanduser(spec)
    if os.path.isdir(folder):
        for candidate in (folder, tokenizer_dir(folder)):
            if os.path.exists(os.path.join(candidate, "tokenizer.json")):
                return candidate
        raise CommandError(f"tokenizer: {spec} holds no tokenizer.json (nor tokenizer/ in it)")
    from tfllm.pretrained.packages import CATALOG

    if spec in CATALOG:
        from tfllm.pretrained.packages import pull

        with user_error():
            return tokenizer_dir(str(pull(spec)))
    return _train_named(spec, args, sources)


def _train_named(name: str, args: dict, sources: list[str]) -> Any:
    import yaml

    from tfllm import registry
    from tfllm.config import config_dir
    from tfllm.data.sources import find_sources, piece_documents, plan_pieces

    registry.ensure_loaded()
    conf = os.path.join(config_dir(), "tokenizer", f"{name}.yaml")
    if os.path.isfile(conf):
        with open(conf, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    else:
        cfg = {"name": name}
    if args["vocab_size"]:
        cfg["vocab_size"] = _number(args, "vocab_size")
    with user_error():
        tokenizer = registry.build("tokenizer", cfg, key="tokenizer")
    if tokenizer.is_trained():
        return tokenizer
    budget = _number(args, "tokenizer_sample_mb", float) * 2**20
    sample, size = [], 0
    with user_error():
        found = find_sources(sources, args["format"])
        for piece in plan_pieces(found, 32 << 20, args["documents"]):
            for doc in piece_documents(
                piece, args["documents"], args["text_field"], args["encoding"]
            ):
                sample.append(doc)
                size += len(doc)
                if size >= budget:
                    break
            if size >= budget:
                break
        tokenizer.adapt(sample)
    print(
        f"trained a {name} tokenizer of {tokenizer.vocabulary_size:,} tokens on the first "
        f"{size / 2**20:.1f} MB of text"
    )
    return tokenizer


def data_prepare(argv: Sequence[str]) -> None:
    from tfllm.data.prepare import check_options, prepare
    from tfllm.data.sources import find_sources

    args = key_values("tfllm data prepare", argv, PREPARE_ARGUMENTS)
    sources = [s for s in args["source"].split(",") if s]
    options = {
        "val_fraction": _number(args, "val_fraction", float),
        "seed": _number(args, "seed"),
        "workers": _number(args, "workers") if args["workers"] else None,
        "piece_mb": _number(args, "piece_mb", float),
    }
    # The options and sources are checked before a tokenizer is built or trained (which may
    # load TensorFlow).
    with user_error():
        check_options(options["val_fraction"], options["piece_mb"], options["workers"])
        find_sources(sources, args["format"])
    tokenizer = resolve_tokenizer(args, sources)
    with user_error():
        manifest = prepare(
            sources,
            args["out"],
            tokenizer,
            format=args["format"],
            text_field=args["text_field"],
            documents=args["documents"],
            encoding=args["encoding"],
            **options,
        )
    _summary(args["out"], manifest)


def _summary(out: str, manifest: dict) -> None:
    train, val = manifest["splits"]["train"], manifest["splits"]["val"]
    mb = manifest["text_bytes"] / 2**20
    seconds = manifest["seconds"]
    print(
        f"prepared {out}: {train['tokens']:,} training tokens in {len(train['shards'])} shards "
        f"({train['documents']:,} documents), {val['tokens']:,} validation tokens "
        f"({val['documents']:,} documents), from {mb:,.1f} MB of text in {seconds:,.1f} s "
        f"({mb / max(seconds, 1e-9):,.2f} MB/s)"
    )
    print(f"train with: tfllm train data=prepared data.path={out}")


def data_inspect(argv: Sequence[str]) -> None:
    from tfllm.data.prepare import MANIFEST, read_json

    if not argv or "=" in argv[0]:
        raise CommandError(USAGE)
    out, rest = argv[0], argv[1:]
    args = key_values("tfllm data inspect", rest, INSPECT_ARGUMENTS)
    path = os.path.join(out, MANIFEST)
    if not os.path.exists(path):
        raise CommandError(f"{out}: no {MANIFEST} (not a prepared dataset, or unfinished)")
    with user_error():
        manifest = read_json(path)
    tok = manifest["tokenizer"]
    print(
        json.dumps(
            {
                "tokenizer": f"{tok['name']} ({tok['vocabulary_size']:,} tokens)",
                "dtype": manifest["dtype"],
                "sources": len(manifest["sources"]),
                **{
                    s: {k: v for k, v in manifest["splits"][s].items() if k != "shards"}
                    for s in ("train", "val")
                },
                "text_bytes": manifest["text_bytes"],
            },
            indent=1,
        )
    )
    if args["verify"].lower() in ("true", "1", "yes"):
        bad = verify(out, manifest)
        if bad:
            raise CommandError("damaged shards: " + "; ".join(bad))
        print("every shard matches its size and sha256")


def verify(out: str, manifest: dict) -> list[str]:
    """The shards whose size or sha256 differs from the manifest."""
    import hashlib

    bad = []
    for split in ("train", "val"):
        for shard in manifest["splits"][split]["shards"]:
            file = os.path.join(out, shard["file"])
            if not os.path.exists(file):
                bad.append(f"{shard['file']} is missing")
                continue
            digest = hashlib.sha256()
            with open(file, "rb") as f:
                for block in iter(lambda f=f: f.read(1 << 24), b""):
                    digest.update(block)
            if digest.hexdigest() != shard["sha256"]:
                bad.append(f"{shard['file']} differs from the manifest (sha256)")
    return bad


def data_main(argv: Sequence[str]) -> None:
    if argv[:1] == ["prepare"]:
        data_prepare(argv[1:])
    elif argv[:1] == ["inspect"]:
        data_inspect(argv[1:])
    else:
        raise CommandError(USAGE)
