"""Reading JSON-lines files, with errors that name the file and line."""

from __future__ import annotations

import json
from typing import Any

from tfllm.registry import ConfigError


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
