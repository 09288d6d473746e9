"""Small synthetic alignment tasks whose answers are known, for tests and benchmarks."""

from __future__ import annotations

import json
import os
import random

# Which fruit has which colour: the templated task SFT teaches.
FRUITS = {"red": "apple", "yellow": "lemon", "green": "lime", "purple": "plum"}
# Other answers, for preference pairs that disagree with what SFT taught.
OTHER_FRUITS = {"red": "plum", "yellow": "lime", "green": "apple", "purple": "lemon"}


def fruit_question(color: str) -> str:
    return f"Which fruit is {color}?"


def fruit_chats(n: int, seed: int) -> list[dict]:
    """`n` conversations `[user: which fruit is <colour>?, assistant: <fruit>]`."""
    gen = random.Random(seed)
    rows = []
    for _ in range(n):
        color = gen.choice(sorted(FRUITS))
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": fruit_question(color)},
                    {"role": "assistant", "content": FRUITS[color]},
                ]
            }
        )
    return rows


def other_fruit_pairs(n: int, seed: int) -> list[dict]:
    """Preference pairs that choose `OTHER_FRUITS` over the fruit SFT taught."""
    gen = random.Random(seed)
    rows = []
    for _ in range(n):
        color = gen.choice(sorted(FRUITS))
        rows.append(
            {
                "prompt": fruit_question(color),
                "chosen": OTHER_FRUITS[color],
                "rejected": FRUITS[color],
            }
        )
    return rows


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> str:
    """Write rows as JSON lines; returns the path."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)
