"""Where corpora come from: text files, JSON-lines, Parquet and Hugging Face `datasets`, read
in pieces (byte ranges, row groups, row ranges) so preparation can spread a corpus of any size
over processes and never holds more than one piece in memory.

A *document* is a file (text, `documents=file`), a paragraph or a line of a text file
(`documents=paragraphs|lines`), or a record (JSON-lines, Parquet, `datasets`: its `text_field`).
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

from tfllm.registry import ConfigError

FORMATS = ("text", "jsonl", "parquet", "hf")
DOCUMENT_MODES = ("file", "paragraphs", "lines")
_PARAGRAPH = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class Piece:
    """Part of one source: bytes `[start, stop)` of a text or JSON-lines file, row groups
    `[start, stop)` of a Parquet file, or rows `[start, stop)` of a `datasets` dataset."""

    format: str
    path: str
    start: int
    stop: int
    split: str = ""  # a DatasetDict's split

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Source:
    """One input: its format, location and size (bytes on disk; rows for `datasets`)."""

    format: str
    path: str
    size: int
    mtime: float
    split: str = ""


def format_of(path: str, given: str = "auto") -> str:
    """The source format `given` names, or the one a file's extension implies.

    >>> format_of("a/b.jsonl"), format_of("x.parquet"), format_of("hf:/data/wiki"), format_of("t")
    ('jsonl', 'parquet', 'hf', 'text')
    """
    if given != "auto":
        if given not in FORMATS:
            raise ConfigError(f"format: one of auto, {', '.join(FORMATS)}; got {given!r}")
        return given
    if path.startswith("hf:"):
        return "hf"
    if path.endswith((".jsonl", ".json")):
        return "jsonl"
    if path.endswith(".parquet"):
        return "parquet"
    return "text"


def find_sources(patterns: str | Sequence[str], fmt: str = "auto") -> list[Source]:
    """Every file the patterns match (a file, a directory, a glob; `hf:DIR_OR_NAME[:split]` for
    a `datasets` dataset), sorted within each pattern, in pattern order."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    if not patterns:
        raise ConfigError("source: give at least one file, directory, glob or hf:DATASET")
    sources: list[Source] = []
    for pattern in patterns:
        if pattern.startswith("hf:") or fmt == "hf":
            sources.append(_hf_source(pattern.removeprefix("hf:")))
            continue
        path = os.path.expanduser(pattern)
        if os.path.isdir(path):
            files = sorted(
                f
                for f in glob.glob(os.path.join(path, "**", "*"), recursive=True)
                if os.path.isfile(f) and not os.path.basename(f).startswith(".")
            )
        elif any(ch in path for ch in "*?["):
            files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
        elif os.path.isfile(path):
            files = [path]
        else:
            raise ConfigError(f"source: no such file or directory: {pattern}")
        if not files:
            raise ConfigError(f"source: no file matches {pattern}")
        for f in files:
            st = os.stat(f)
            sources.append(Source(format_of(f, fmt), os.path.abspath(f), st.st_size, st.st_mtime))
    return sources


def hf_spec(spec: str) -> tuple[str, str]:
    """`DIR_OR_NAME[:split]` (after `hf:`) → `(dir or name, split)`.

    >>> hf_spec("wikitext:validation"), hf_spec("imdb")
    (('wikitext', 'validation'), ('imdb', ''))
    """
    if os.path.isdir(spec) or ":" not in spec:
        return spec, ""
    name, _, split = spec.rpartition(":")
    return name, split


def _hf_source(spec: str) -> Source:
    name, split = hf_spec(spec)
    if os.path.isdir(name):
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(name) for f in fs)
        return Source("hf", os.path.abspath(name), size, os.path.getmtime(name), split)
    return Source("hf", name, 0, 0.0, split)


def open_hf(path: str, split: str = ""):
    """A `datasets.Dataset`: one saved with `save_to_disk` (a directory; a `DatasetDict`'s
    `split`, default `train`), or an installed or cached dataset by name (no download is
    attempted when `HF_DATASETS_OFFLINE=1`)."""
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            "source: hf: sources need the `datasets` package: pip install 'tfllm[data]'"
        ) from None
    try:
        if os.path.isdir(path):
            ds = datasets.load_from_disk(path)
        else:
            ds = datasets.load_dataset(path, split=split or "train")
    except Exception as e:  # datasets raises many kinds; the user needs the reason, not the kind
        raise ConfigError(f"source: hf:{path} cannot be loaded: {type(e).__name__}: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        split = split or "train"
        if split not in ds:
            raise ConfigError(f"source: hf:{path} has splits {sorted(ds)}, not {split!r}")
        ds = ds[split]
    return ds


def plan_pieces(sources: Sequence[Source], piece_bytes: int, documents: str) -> list[Piece]:
    """Split sources into pieces of about `piece_bytes`, cut where a document ends."""
    if documents not in DOCUMENT_MODES:
        raise ConfigError(f"documents: one of {', '.join(DOCUMENT_MODES)}; got {documents!r}")
    pieces: list[Piece] = []
    for src in sources:
        if src.format == "text" and documents == "file" or src.size == 0 and src.format != "hf":
            pieces.append(Piece(src.format, src.path, 0, src.size))
        elif src.format in ("text", "jsonl"):
            sep = b"\n\n" if src.format == "text" and documents == "paragraphs" else b"\n"
            pieces += [
                Piece(src.format, src.path, a, b) for a, b in _byte_ranges(src, sep, piece_bytes)
            ]
        elif src.format == "parquet":
            pieces += _parquet_pieces(src, piece_bytes)
        else:
            ds = open_hf(src.path, src.split)
            rows = len(ds)
            per_row = max(1, (ds.data.nbytes or 1) // max(rows, 1))
            step = max(1, piece_bytes // per_row)
            pieces += [
                Piece("hf", src.path, a, min(a + step, rows), src.split)
                for a in range(0, rows, step)
            ]
    return pieces


def _byte_ranges(src: Source, sep: bytes, piece_bytes: int) -> Iterator[tuple[int, int]]:
    start = 0
    with open(src.path, "rb") as f:
        while start < src.size:
            target = start + piece_bytes
            if target >= src.size:
                yield start, src.size
                return
            f.seek(target)
            tail = b""
            while True:  # the first separator at or after the target (it may straddle reads)
                block = f.read(1 << 16)
                if not block:
                    yield start, src.size
                    return
                buf = tail + block
                at = buf.find(sep)
                if at >= 0:
                    stop = target - len(tail) + at + len(sep)
                    break
                tail = buf[-(len(sep) - 1) :] if len(sep) > 1 else b""
                target += len(block)
            yield start, stop
            start = stop


def _parquet_pieces(src: Source, piece_bytes: int) -> list[Piece]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            f"source: {src.path} is Parquet, which needs pyarrow: pip install 'tfllm[data]'"
        ) from None
    meta = pq.ParquetFile(src.path).metadata
    pieces, start, size = [], 0, 0
    for g in range(meta.num_row_groups):
        size += meta.row_group(g).total_byte_size
        if size >= piece_bytes:
            pieces.append(Piece("parquet", src.path, start, g + 1))
            start, size = g + 1, 0
    if start < meta.num_row_groups or not pieces:
        pieces.append(Piece("parquet", src.path, start, meta.num_row_groups))
    return pieces


def piece_documents(
    piece: Piece, documents: str = "file", text_field: str = "text", encoding: str = "utf-8"
) -> Iterator[str]:
    """The documents of one piece, in order (empty ones skipped)."""
    if piece.format in ("text", "jsonl"):
        with open(piece.path, "rb") as f:
            f.seek(piece.start)
            raw = f.read(piece.stop - piece.start)
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as e:
            raise ConfigError(f"source: {piece.path} is not valid {encoding} ({e})") from None
        if piece.format == "text":
            if documents == "file":
                parts = [text] if text else []
            else:
                split = _PARAGRAPH.split(text) if documents == "paragraphs" else text.split("\n")
                parts = [p for p in split if p.strip()]
            yield from parts
            return
        for line_no, line in enumerate(text.split("\n")):
            if line.strip():
                yield _record_text(json_row(line, piece, line_no), text_field, piece)
        return
    if piece.format == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(piece.path)
        if text_field not in pf.schema_arrow.names:
            raise ConfigError(
                f"text_field: {piece.path} has columns {pf.schema_arrow.names}, not {text_field!r}"
            )
        for g in range(piece.start, piece.stop):
            for value in pf.read_row_group(g, columns=[text_field]).column(0).to_pylist():
                if value:
                    yield _record_text({text_field: value}, text_field, piece)
        return
    ds = open_hf(piece.path, piece.split)
    if text_field not in ds.column_names:
        raise ConfigError(
            f"text_field: hf:{piece.path} has columns {ds.column_names}, not {text_field!r}"
        )
    for value in ds.select_columns([text_field])[piece.start : piece.stop][text_field]:
        if value:
            yield _record_text({text_field: value}, text_field, piece)


def json_row(line: str, piece: Piece, line_no: int) -> dict:
    try:
        row = json.loads(line)
    except ValueError as e:
        raise ConfigError(
            f"source: {piece.path} (bytes from {piece.start}, line {line_no + 1}) is not JSON: {e}"
        ) from None
    if not isinstance(row, dict):
        raise ConfigError(f"source: {piece.path}: each line must be a JSON object")
    return row


def _record_text(row: dict, text_field: str, piece: Piece) -> str:
    if text_field not in row:
        raise ConfigError(f"text_field: a record of {piece.path} has no {text_field!r} field")
    value = row[text_field]
    if not isinstance(value, str):
        raise ConfigError(
            f"text_field: {text_field!r} in {piece.path} must be a string, got "
            f"{type(value).__name__}"
        )
    return value
