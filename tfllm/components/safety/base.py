"""The contract of a safety filter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ACTIONS = ("flag", "redact", "block")


@dataclass(frozen=True)
class Verdict:
    """What a filter decided about one text.

    Attributes:
        flagged: the text is unsafe by this filter.
        reasons: what matched (patterns, a classifier's label and score).
        text: the text to show: unchanged (`flag`), with matches replaced (`redact`), or the
            filter's refusal message (`block`) when flagged.
    """

    flagged: bool
    reasons: tuple[str, ...]
    text: str


class SafetyFilter:
    """Base class of safety filters (registry kind `safety_filter`).

    Subclasses implement `verdicts(texts)`. A filter that can run inside a TensorFlow graph also
    implements `flag_graph(texts)` (string `(B,)` to bool `(B,)`), so exports can report it in a
    `flagged` output without any Python at serving time.

    Args:
        action: `flag` (report only), `redact` (replace what matched) or `block` (replace the
            whole text with `message`).
        message: the text that replaces a blocked completion.
    """

    graph_capable = False

    def __init__(self, action: str = "flag", message: str = "[withheld by the safety filter]"):
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got '{action}'")
        self.action = action
        self.message = message

    def verdicts(self, texts: Sequence[str]) -> list[Verdict]:
        raise NotImplementedError

    def apply(self, texts: Sequence[str]) -> list[str]:
        """The texts as the filter's action leaves them."""
        return [v.text for v in self.verdicts(texts)]

    def flag_graph(self, texts):
        raise NotImplementedError(f"{type(self).__name__} cannot run inside a graph")

    def redact_graph(self, texts):
        raise NotImplementedError(f"{type(self).__name__} cannot redact inside a graph")

    def apply_graph(self, texts):
        """`(texts as the action leaves them (B,), flagged (B,))` as graph ops: what `apply`
        and `verdicts` give in Python, for exports."""
        import tensorflow as tf

        flagged = self.flag_graph(texts)  # (B,) bool
        if self.action == "block":
            texts = tf.where(flagged, tf.constant(self.message), texts)
        elif self.action == "redact":
            texts = tf.where(flagged, self.redact_graph(texts), texts)
        return texts, flagged


def build_safety_filter(spec, key: str = "safety") -> SafetyFilter | None:
    """The filter a config names (`{name: patterns, words: [...]}`), or None for `null`."""
    if spec is None:
        return None
    from tfllm import registry

    return registry.build("safety_filter", spec, key=key)
