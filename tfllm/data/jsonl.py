"""Reading records (JSON-lines, Parquet, Hugging Face `datasets`), with errors that name the
file and line (or row)."""

from __future__ import annotations

import json
from typing import Any

from tfllm.registry import ConfigError


def records(path: str) -> list[tuple[int, Any]]:
    """`(number, record)` for every record of `path`: a JSON-lines file (every non-blank line,
    numbered by line), a `.parquet` file or `hf:DIR_OR_NAME[:split]` (a `datasets` dataset; rows
    numbered from 1). Fine-tuning data (chat, preferences, prompts, SQuAD) reads any of them.

    Example:

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "rows.jsonl")
    >>> _ = open(p, "w").write('{"a": 1}\\n\\n{"a": 2}\\n')
    >>> records(p)
    [(1, {'a': 1}), (3, {'a': 2})]
    """
    if path.startswith("hf:"):
        from tfllm.data.sources import hf_spec, open_hf

        return list(enumerate(open_hf(*hf_spec(path.removeprefix("hf:"))), start=1))
    if path.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError(f"{path}: Parquet needs pyarrow: pip install 'tfllm[data]'") from None
        try:
            rows = pq.read_table(path).to_pylist()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read as Parquet ({e})") from None
        return list(enumerate(rows, start=1))
    return json_lines(path)


def json_lines(path: str) -> list[tuple[int, Any]]:
    """`(line number, parsed value)` for every non-blank line of `path`.

    Raises:
        ConfigError: the file cannot be read, or a line is not JSON (naming `path:line`).
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{number}: not JSON ({e.msg})") from None
    return rows
