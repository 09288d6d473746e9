"""Progress of long library work (evaluation, export, conversion), reported through a hook the
application installs: the `tfllm` command installs a terminal progress bar with an ETA
(`tfllm.commands.progress_bar`); a library user can install their own or none. The library
itself never prints.

Example:

>>> seen = []
>>> for i in tracked(range(3), "counting"):
...     seen.append(i)
>>> seen
[0, 1, 2]
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

# `reporter(what, total, unit)`: a context manager yielding `advance(n)`.
Reporter = Callable[[str, "int | None", str], Any]
_reporter: Reporter | None = None


def set_reporter(reporter: Reporter | None) -> None:
    """Install (or, with None, remove) what shows progress."""
    global _reporter
    _reporter = reporter


@contextlib.contextmanager
def task(what: str, total: int | None = None, unit: str = "it") -> Iterator[Callable[[int], None]]:
    """A unit of long work: yields `advance(n=1)`, to call as parts of `total` complete."""
    if _reporter is None:
        yield lambda n=1: None
        return
    with _reporter(what, total, unit) as advance:
        yield advance


def tracked(
    items: Iterable[T], what: str, total: int | None = None, unit: str = "it"
) -> Iterator[T]:
    """`items`, one at a time, reporting each as done."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with task(what, total, unit) as advance:
        for item in items:
            yield item
            advance(1)
