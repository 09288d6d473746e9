"""Documents for a knowledge base: text files and JSON-lines, split into overlapping passages."""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass

from tfllm.registry import ConfigError


@dataclass(frozen=True)
class Passage:
    """A chunk of a document: `id` is `source#number` (the chunk's place in its document)."""

    id: str
    source: str
    text: str


def read_documents(paths: str | list[str], text_field: str = "text") -> list[tuple[str, str]]:
    """`(source, text)` of every document: each text file is one document, each line of a
    `.jsonl` file one (its `text_field`, named by its `id` field or its line number).

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> _ = open(os.path.join(d, "a.txt"), "w").write("Paris is in France.")
    >>> read_documents(os.path.join(d, "*.txt"))[0][1]
    'Paris is in France.'
    """
    patterns = [paths] if isinstance(paths, str) else list(paths)
    files: list[str] = []
    for pattern in patterns:
        found = sorted(glob.glob(os.path.expanduser(str(pattern)), recursive=True))
        if not found:
            raise ConfigError(f"docs: no file matches {pattern}")
        files += [f for f in found if os.path.isfile(f)]
    documents = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            if not path.endswith((".jsonl", ".json")):
                documents.append((path, f.read()))
                continue
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    text = row[text_field]
                except (ValueError, KeyError, TypeError):
                    raise ConfigError(
                        f"docs: {path}:{number} is not a JSON object with a '{text_field}' string"
                    ) from None
                if not isinstance(text, str):
                    raise ConfigError(f"docs: {path}:{number}: '{text_field}' must be a string")
                documents.append((f"{path}:{row.get('id', number)}", text))
    return documents


def chunk_text(text: str, max_words: int = 100, overlap: int = 20) -> list[str]:
    """Passages of at most `max_words` words, consecutive ones sharing `overlap` words; each
    paragraph (blank-line separated) starts a new passage, so passages rarely mix topics.

    >>> chunk_text("one two three four five", max_words=3, overlap=1)
    ['one two three', 'three four five']
    """
    if max_words < 1 or not 0 <= overlap < max_words:
        raise ConfigError(
            f"chunking: need max_words >= 1 and 0 <= overlap < max_words, got "
            f"{max_words} and {overlap}"
        )
    out = []
    for paragraph in re.split(r"\n\s*\n", text):
        words = paragraph.split()
        start = 0
        while start < len(words):
            out.append(" ".join(words[start : start + max_words]))
            if start + max_words >= len(words):
                break
            start += max_words - overlap
    return out


def passages_of(
    documents: list[tuple[str, str]], max_words: int = 100, overlap: int = 20
) -> list[Passage]:
    """Every document's passages, numbered within their document."""
    return [
        Passage(f"{source}#{i}", source, chunk)
        for source, text in documents
        for i, chunk in enumerate(chunk_text(text, max_words, overlap))
    ]
