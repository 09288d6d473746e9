"""How the Python API shapes answers: one prompt in, one answer out; a list in, a list out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def as_list(texts: str | Sequence[str], what: str) -> tuple[list[str], bool]:
    """`(texts as a list, whether one string was given)`.

    >>> as_list("hi", "prompts"), as_list(["a", "b"], "prompts")
    ((['hi'], True), (['a', 'b'], False))
    """
    if isinstance(texts, str):
        return [texts], True
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"{what}: pass a string or a non-empty list of strings")
    return texts, False


def shaped(rows: list[list[T]], single: bool, per_prompt: int) -> Any:
    """Answers per prompt (`rows`, `per_prompt` each) as the caller asked: a bare answer for
    one prompt and one answer, a list per prompt for several answers, a list otherwise.

    >>> shaped([["x"]], True, 1), shaped([["x"], ["y"]], False, 1), shaped([["x", "z"]], True, 2)
    ('x', ['x', 'y'], ['x', 'z'])
    """
    if per_prompt == 1:
        flat = [row[0] for row in rows]
        return flat[0] if single else flat
    return rows[0] if single else rows
