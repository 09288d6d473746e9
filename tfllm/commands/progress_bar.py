"""The `tfllm` command's progress display: tqdm bars on stderr (with rate and ETA) for the
library's `tfllm.progress` tasks, shown only on a terminal."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from tfllm import progress


@contextlib.contextmanager
def terminal_bar(what: str, total: int | None, unit: str) -> Iterator[Callable[[int], None]]:
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        desc=what,
        unit=unit,
        unit_scale=unit == "B",
        unit_divisor=1024 if unit == "B" else 1000,
        file=sys.stderr,
        disable=None,  # off unless stderr is a terminal
        leave=False,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    try:
        yield bar.update
    finally:
        bar.close()


def install() -> None:
    """Show the library's progress on this terminal."""
    progress.set_reporter(terminal_bar)
