"""Grounded prompts: retrieved passages, numbered, put before the question; citations read back.

The template (`GROUNDING_TEMPLATE`) is the user turn the model sees; the chat history keeps
the question alone, so old turns do not carry old passages.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tfllm.retrieval.documents import Passage

GROUNDING_TEMPLATE = (
    "Answer the question using the passages below, and cite the passages you use as [1], [2]."
    "\n\n{passages}\n\nQuestion: {question}"
)


def grounded_question(
    question: str, passages: Sequence[Passage], template: str = GROUNDING_TEMPLATE
) -> str:
    """`template` filled with the numbered passages and the question.

    >>> p = Passage("a.txt#0", "a.txt", "Paris is the capital of France.")
    >>> print(grounded_question("Capital of France?", [p], "{passages}\\nQ: {question}"))
    [1] Paris is the capital of France.
    Q: Capital of France?
    """
    if "{question}" not in template or "{passages}" not in template:
        raise ValueError("a grounding template needs {passages} and {question}")
    numbered = "\n".join(f"[{i}] {p.text}" for i, p in enumerate(passages, 1))
    return template.format(passages=numbered, question=question)


def citations(answer: str, count: int) -> list[int]:
    """The passage numbers (1-based, within `count`) an answer cites as `[n]`, in order.

    >>> citations("Paris [1], as [3] and [1] say; [9] is no passage.", 3)
    [1, 3]
    """
    seen: list[int] = []
    for number in re.findall(r"\[(\d+)\]", answer):
        n = int(number)
        if 1 <= n <= count and n not in seen:
            seen.append(n)
    return seen
