"""Corpora prepared once into sharded token files that training streams (`tfllm data prepare`).

A prepared dataset is a directory:

    manifest.json            what is there (written last: its presence means complete)
    tokenizer/               the tokenizer every token was made with
    train/00000.tokens       token ids, little-endian uint16 (uint32 above 65,535 tokens)
    train/00000.docs         int64 offsets where each document starts in the shard
    val/00000.tokens, ...    held-out documents, chosen by a seeded hash of their text

Work is cut into units (pieces of sources, about `piece_mb` of text each) that worker processes
tokenize in parallel. Each unit's files are renamed into place and then marked done, so an
interrupted preparation, run again with the same arguments, redoes only unfinished units.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from tfllm import progress
from tfllm.data.sources import Piece, Source, find_sources, piece_documents, plan_pieces
from tfllm.files import atomic_write
from tfllm.registry import ConfigError

log = logging.getLogger(__name__)

FORMAT = "tfllm.prepared/1"
MANIFEST = "manifest.json"
WORK = ".work"
SPLITS = ("train", "val")
_BATCH_CHARS = 1 << 20  # text per tokenizer call


def token_dtype(vocabulary_size: int) -> np.dtype:
    """The smallest unsigned type that holds every id.

    >>> token_dtype(50257).str, token_dtype(151_000).str
    ('<u2', '<u4')
    """
    return np.dtype("<u2") if vocabulary_size <= 1 << 16 else np.dtype("<u4")


# Keras layer settings in a tokenizer's saved config that do not change its ids (the instance
# name `byte_tokenizer_1`, and what calling it once adds).
_NOT_TOKENS = ("name", "trainable", "dtype", "build_config")


def tokenizer_fingerprint(directory: str) -> str:
    """sha256 over the files of a saved tokenizer (names and contents; of `tokenizer.json`, the
    registered class and its arguments): equal fingerprints, equal tokens."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if not os.path.isfile(path) or name.startswith("."):
            continue
        with open(path, "rb") as f:
            data = f.read()
        if name == "tokenizer.json":  # what makes ids: the class and its arguments
            saved = json.loads(data)
            args = {k: v for k, v in saved.get("config", {}).items() if k not in _NOT_TOKENS}
            data = json.dumps([saved.get("registered_name"), args], sort_keys=True).encode()
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def fingerprint_of(tokenizer: Any) -> str:
    """The fingerprint of a tokenizer object (saved to a scratch folder and hashed)."""
    with tempfile.TemporaryDirectory() as d:
        tokenizer.save_to_directory(d)
        return tokenizer_fingerprint(d)


def is_validation(text: str, seed: int, fraction: float) -> bool:
    """Whether a document is held out: a keyed hash of its text, so the split does not depend
    on the order or the format the documents came in (and duplicates fall on one side).

    >>> is_validation("some document", 0, 0.0), is_validation("some document", 0, 1.0)
    (False, True)
    """
    if fraction <= 0:
        return False
    key = seed.to_bytes(8, "little", signed=True)
    h = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8, key=key).digest()
    return int.from_bytes(h, "little") < fraction * 2.0**64


# ----- units ------------------------------------------------------------------------------------
def unit_bytes(total: int, piece_mb: float) -> int:
    """Text per unit of work: `piece_mb`, or less for a small corpus so that it still makes
    about 16 units (work for every core to the end). It depends only on the corpus, so an
    interrupted preparation resumed with another worker count finds the same units.

    >>> unit_bytes(200 * 2**20, 32) / 2**20, unit_bytes(4 * 2**30, 32) / 2**20
    (12.5, 32.0)
    """
    return int(max(min(total / 16, piece_mb * 2**20), min(2**20, piece_mb * 2**20)))


def group_units(pieces: Sequence[Piece], unit_bytes: int) -> list[list[Piece]]:
    """Consecutive small pieces (whole small files) grouped to about `unit_bytes` each."""
    units: list[list[Piece]] = []
    size = unit_bytes
    for piece in pieces:
        known = piece.format in ("text", "jsonl")
        piece_size = piece.stop - piece.start if known else unit_bytes
        if not known or size + piece_size > unit_bytes:
            units.append([])
            size = 0
        units[-1].append(piece)
        size += piece_size
    return units


class _ShardWriter:
    """Tokens and document offsets of one split of one unit, hashed as written."""

    def __init__(self, root: str, split: str, unit: int, dtype: np.dtype):
        self.dir = os.path.join(root, split)
        os.makedirs(self.dir, exist_ok=True)
        self.name = f"{unit:05d}"
        self.tmp = os.path.join(root, WORK, f"{split}-{self.name}")
        self.tokens = open(self.tmp + ".tokens", "wb")
        self.dtype = dtype
        self.sha = hashlib.sha256()
        self.count = 0
        self.starts: list[int] = []

    def add(self, ids: np.ndarray) -> None:
        self.starts.append(self.count)
        data = ids.astype(self.dtype).tobytes()
        self.tokens.write(data)
        self.sha.update(data)
        self.count += len(ids)

    def finish(self) -> dict:
        self.tokens.close()
        docs = np.asarray(self.starts, "<i8")
        docs.tofile(self.tmp + ".docs")
        os.replace(self.tmp + ".tokens", os.path.join(self.dir, self.name + ".tokens"))
        os.replace(self.tmp + ".docs", os.path.join(self.dir, self.name + ".docs"))
        return {
            "file": f"{os.path.basename(self.dir)}/{self.name}.tokens",
            "documents_file": f"{os.path.basename(self.dir)}/{self.name}.docs",
            "tokens": self.count,
            "documents": len(self.starts),
            "sha256": self.sha.hexdigest(),
        }


_worker_tokenizer: Any = None
_worker_error: Exception | None = None


def _init_worker(tokenizer_path: str) -> None:
    # An initializer that raises makes a Pool replace the worker forever: keep the error for
    # the first task to raise instead.
    global _worker_tokenizer, _worker_error
    from tfllm.components.tokenizers.base import load_tokenizer

    try:
        _worker_tokenizer = load_tokenizer(tokenizer_path)
    except Exception as e:  # noqa: BLE001 - re-raised by the first task
        _worker_error = e


def _tokenizer() -> Any:
    if _worker_error is not None:
        raise _worker_error
    return _worker_tokenizer


def _batches(documents: Iterator[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for doc in documents:
        batch.append(doc)
        size += len(doc)
        if size >= _BATCH_CHARS or len(batch) >= 4096:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def prepare_unit(job: dict) -> dict:
    """Tokenize one unit into its train and validation shards; returns its record."""
    import tensorflow as tf

    tokenizer = _tokenizer()
    opts = job["options"]
    dtype = np.dtype(job["dtype"])
    eos = tokenizer.eos_id
    writers = {s: _ShardWriter(job["out"], s, job["unit"], dtype) for s in SPLITS}
    text_bytes = 0
    for piece_dict in job["pieces"]:
        piece = Piece(**piece_dict)
        docs = piece_documents(piece, opts["documents"], opts["text_field"], opts["encoding"])
        for batch in _batches(docs):
            ragged = tokenizer(tf.constant(batch))
            flat = ragged.flat_values.numpy()
            bounds = np.concatenate([[0], np.cumsum(ragged.row_lengths().numpy())])
            for k, doc in enumerate(batch):
                ids = flat[bounds[k] : bounds[k + 1]]
                if eos is not None:
                    ids = np.append(ids, eos)
                held = is_validation(doc, opts["seed"], opts["val_fraction"])
                writers["val" if held else "train"].add(ids)
                text_bytes += len(doc.encode("utf-8", "surrogatepass"))
    record = {"unit": job["unit"], "text_bytes": text_bytes}
    record.update({s: w.finish() for s, w in writers.items()})
    atomic_write(os.path.join(job["out"], WORK, f"{job['unit']:05d}.json"), json.dumps(record))
    return record


# ----- the whole preparation ---------------------------------------------------------------------
def _plan(sources: list[Source], options: dict, tokenizer: dict) -> dict:
    return {
        "format": FORMAT,
        "options": options,
        "tokenizer": tokenizer,
        "sources": [{**s.__dict__} for s in sources],
    }


def check_options(val_fraction: float, piece_mb: float, workers: int | None) -> None:
    """Raise a `ConfigError` naming the first of `prepare`'s options out of range.

    >>> check_options(0.01, 32, None)
    >>> check_options(1.5, 32, None)
    Traceback (most recent call last):
    ...
    tfllm.registry.ConfigError: val_fraction: must be in [0, 1), got 1.5
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction: must be in [0, 1), got {val_fraction}")
    if piece_mb <= 0:
        raise ConfigError(f"piece_mb: must be positive, got {piece_mb}")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers: must be at least 1, got {workers}")


def prepare(
    source: str | Sequence[str],
    out: str,
    tokenizer: Any,
    *,
    format: str = "auto",
    text_field: str = "text",
    documents: str = "file",
    val_fraction: float = 0.01,
    seed: int = 0,
    workers: int | None = None,
    piece_mb: float = 32,
    encoding: str = "utf-8",
) -> dict:
    """Prepare `source` into `out` with a trained `tokenizer`; returns the manifest.

    Args:
        source: files, directories, globs, or `hf:DIR_OR_NAME[:split]`.
        out: the prepared dataset's directory.
        tokenizer: a trained tfllm `Tokenizer`, or the folder of a saved one (then this
            process does not load it: only the workers do).
        format: `auto` (by extension), `text`, `jsonl`, `parquet` or `hf`.
        text_field: the field (column) of a record that holds its text.
        documents: what a document of a text file is: `file`, `paragraphs` or `lines`.
        val_fraction: share of documents held out for validation (by a hash of their text).
        seed: the held-out hash's key.
        workers: processes that tokenize (default: the cores this process may use).
        piece_mb: the most text per unit of work (and so per shard).
        encoding: text file encoding.
    """
    check_options(val_fraction, piece_mb, workers)
    workers = workers or len(os.sched_getaffinity(0))
    started = time.time()
    sources = find_sources(source, format)
    options = {
        "text_field": text_field,
        "documents": documents,
        "val_fraction": float(val_fraction),
        "seed": int(seed),
        "piece_mb": float(piece_mb),
        "encoding": encoding,
    }
    work = os.path.join(out, WORK)
    tok_dir = os.path.join(out, "tokenizer")
    with tempfile.TemporaryDirectory() as scratch:
        if isinstance(tokenizer, str | os.PathLike):
            _copy_tokenizer(str(tokenizer), scratch)
        else:
            tokenizer.save_to_directory(scratch)
        # The workers start at once (TensorFlow's import overlaps the planning); with a saved
        # tokenizer given as a folder, this process never imports TensorFlow.
        with _tokenizing(scratch, workers, tokenizer) as pool:
            try:
                info = pool.apply(tokenizer_info)
            except ConfigError as e:  # name the user's folder, not the scratch copy
                raise ConfigError(str(e).replace(scratch, str(tokenizer))) from None
            info["fingerprint"] = tokenizer_fingerprint(scratch)
            plan = _plan(sources, options, info)
            existing = _check_out(out, plan)
            if existing is not None:
                return existing
            os.makedirs(work, exist_ok=True)
            if not os.path.exists(os.path.join(tok_dir, "tokenizer.json")):
                shutil.rmtree(tok_dir, ignore_errors=True)
                shutil.copytree(scratch, tok_dir)
            atomic_write(os.path.join(work, "plan.json"), json.dumps(plan, indent=1))
            dtype = token_dtype(info["vocabulary_size"])
            unit = unit_bytes(sum(src.size for src in sources), piece_mb)
            units = group_units(plan_pieces(sources, unit, documents), unit)
            records: dict[int, dict] = {}
            for i in range(len(units)):
                done = os.path.join(work, f"{i:05d}.json")
                if os.path.exists(done):
                    records[i] = read_json(done)
            jobs = [
                {
                    "unit": i,
                    "pieces": [p.to_dict() for p in unit],
                    "out": out,
                    "options": options,
                    "dtype": dtype.str,
                }
                for i, unit in enumerate(units)
                if i not in records
            ]
            if records:
                log.info("resuming: %d of %d units were already done", len(records), len(units))
            sizes = [sum(_piece_size(p) for p in unit) for unit in units]
            with progress.task(f"preparing {out}", sum(sizes) or None, "B") as advance:
                advance(sum(sizes[i] for i in records))
                for record in pool.imap_unordered(prepare_unit, jobs):
                    records[record["unit"]] = record
                    advance(sizes[record["unit"]] or record["text_bytes"])
    manifest = {
        **plan,
        "dtype": dtype.str,
        "splits": {s: _split_summary([records[i][s] for i in sorted(records)]) for s in SPLITS},
        "text_bytes": sum(r["text_bytes"] for r in records.values()),
        "seconds": round(time.time() - started, 3),
    }
    if manifest["splits"]["train"]["tokens"] == 0:
        raise ConfigError(f"source: {source} holds no text")
    atomic_write(os.path.join(out, MANIFEST), json.dumps(manifest, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return manifest


def _copy_tokenizer(folder: str, scratch: str) -> None:
    if not os.path.exists(os.path.join(folder, "tokenizer.json")):
        raise ConfigError(f"tokenizer: {folder} holds no tokenizer.json: not a saved tokenizer")
    for name in os.listdir(folder):
        if os.path.isfile(os.path.join(folder, name)):
            shutil.copy2(os.path.join(folder, name), os.path.join(scratch, name))


def _check_out(out: str, plan: dict) -> dict | None:
    """The finished manifest if `out` already holds this preparation; None to (re)start it;
    an error if `out` holds something else."""
    plan_path = os.path.join(out, WORK, "plan.json")
    manifest_path = os.path.join(out, MANIFEST)
    if os.path.exists(manifest_path):
        existing = read_json(manifest_path)
        if {k: existing.get(k) for k in plan} == plan:
            log.info("%s is already prepared from these sources", out)
            return existing
        raise ConfigError(
            f"out: {out} already holds a prepared dataset made from other sources or "
            "settings; give another out= or delete it"
        )
    if os.path.exists(plan_path) and read_json(plan_path) != plan:
        raise ConfigError(
            f"out: {out} holds an unfinished preparation with other sources or settings "
            f"(see {plan_path}); rerun it with those, or delete {out}"
        )
    if os.path.isdir(out) and not os.path.exists(plan_path) and os.listdir(out):
        raise ConfigError(f"out: {out} exists and is not a prepared dataset; give another")
    return None


def tokenizer_info() -> dict:
    """What the manifest says of the (worker's) tokenizer."""
    tokenizer = _tokenizer()
    return {
        "name": type(tokenizer).__name__,
        "vocabulary_size": int(tokenizer.vocabulary_size),
        "eos_id": tokenizer.eos_id,
    }


class _InProcess:
    """The pool interface, run here (one worker)."""

    def apply(self, fn):
        return fn()

    def imap_unordered(self, fn, jobs):
        return map(fn, jobs)


@contextlib.contextmanager
def _tokenizing(tokenizer_dir: str, workers: int, tokenizer: Any) -> Iterator[Any]:
    global _worker_tokenizer, _worker_error
    if workers == 1:
        if isinstance(tokenizer, str | os.PathLike):
            _init_worker(tokenizer_dir)
        else:
            _worker_tokenizer, _worker_error = tokenizer, None
        yield _InProcess()
        return
    ctx = multiprocessing.get_context("spawn")  # TensorFlow does not survive a fork
    quiet = {"TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    saved = {k: os.environ.get(k) for k in quiet}
    os.environ.update({k: os.environ.get(k) or v for k, v in quiet.items()})
    try:  # the workers inherit the environment when they start
        with ctx.Pool(workers, _init_worker, (tokenizer_dir,)) as pool:
            yield pool
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _piece_size(piece: Piece) -> int:
    return piece.stop - piece.start if piece.format in ("text", "jsonl") else 0


def _split_summary(shards: list[dict]) -> dict:
    shards = [s for s in shards if s["tokens"]]
    return {
        "tokens": sum(s["tokens"] for s in shards),
        "documents": sum(s["documents"] for s in shards),
        "shards": shards,
    }


def read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"{path} is unreadable ({e}); delete the folder and prepare again"
        ) from None
