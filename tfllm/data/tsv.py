"""Labelled texts from a TSV file with a header (SST-2's layout): classification data and
classification evaluations read them the same way."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass

from tfllm.registry import ConfigError


@dataclass(frozen=True)
class LabelledText:
    """One labelled example and where it came from (for error messages)."""

    text: str
    label: str
    source: str = ""
    pair: str | None = None


def read_labelled_tsv(
    path: str,
    labels: Sequence[str] | None = None,
    text_column: str = "sentence",
    label_column: str = "label",
    pair_column: str | None = None,
) -> list[LabelledText]:
    """Rows of a TSV file with a header naming `text_column` and `label_column` (and
    `pair_column`, the second text of pair tasks such as entailment, when given).

    Raises:
        ConfigError: naming the file and line, for a missing column, a row with the wrong number
            of fields, an empty text, or a label outside `labels`.
    """
    try:
        handle = open(path, encoding="utf-8", newline="")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    with handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise ConfigError(f"{path}: the file is empty (expected a header line)")
        for column in (text_column, label_column, pair_column):
            if column is not None and column not in header:
                raise ConfigError(
                    f"{path}:1: no '{column}' column in the header {header}; name the columns "
                    "with text_column=, label_column= (and pair_column=)"
                )
        ti, li = header.index(text_column), header.index(label_column)
        pi = header.index(pair_column) if pair_column is not None else None
        rows = []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ConfigError(
                    f"{path}:{line}: {len(row)} tab-separated fields, the header has {len(header)}"
                )
            text, label = row[ti].strip(), row[li].strip()
            if not text:
                raise ConfigError(f"{path}:{line}: the text is empty")
            pair = row[pi].strip() if pi is not None else None
            if pi is not None and not pair:
                raise ConfigError(f"{path}:{line}: the '{pair_column}' text is empty")
            if labels is not None and label not in labels:
                raise ConfigError(
                    f"{path}:{line}: label '{label}' is not one of the configured labels "
                    f"{list(labels)}"
                )
            rows.append(LabelledText(text, label, f"{path}:{line}", pair))
    if not rows:
        raise ConfigError(f"{path}: no rows after the header")
    return rows
