"""A safety filter from lists of words and regular expressions."""

from __future__ import annotations

import re
from collections.abc import Sequence

from tfllm.components.safety.base import SafetyFilter, Verdict
from tfllm.registry import register


@register("safety_filter", "patterns")
class PatternFilter(SafetyFilter):
    """Flags texts that contain any listed word (whole word, case-insensitive) or match any
    regular expression.

    Expressions must be valid in both Python's `re` and RE2 (TensorFlow's regex engine, used by
    `flag_graph` in exports): no backreferences or lookaround. Each is checked in both at
    construction.

    Args:
        words: words or phrases, matched whole and case-insensitively.
        patterns: regular expressions (RE2 syntax), matched anywhere.
        action: `flag`, `redact` or `block` (see `SafetyFilter`).
        message: replaces a blocked text.
        redaction: replaces each match when redacting.

    Example:

    >>> f = PatternFilter(words=["darn"], action="redact")
    >>> f.apply(["well, darn it", "fine"])
    ['well, [redacted] it', 'fine']
    """

    graph_capable = True

    def __init__(
        self,
        words: Sequence[str] = (),
        patterns: Sequence[str] = (),
        action: str = "flag",
        message: str = "[withheld by the safety filter]",
        redaction: str = "[redacted]",
    ):
        super().__init__(action=action, message=message)
        if not words and not patterns:
            raise ValueError("a patterns filter needs at least one of words or patterns")
        self.words = [str(w) for w in words]
        self.patterns = [str(p) for p in patterns]
        self.redaction = redaction
        parts = [rf"\b{re.escape(w)}\b" for w in self.words] + [f"(?:{p})" for p in self.patterns]
        for part in parts:
            try:
                re.compile(part)
            except re.error as e:
                raise ValueError(f"patterns: '{part}' is not a valid expression ({e})") from None
        self._parts = parts
        self._regex = re.compile("|".join(parts), re.IGNORECASE)
        # RE2 spelling of the same alternation, for tf.strings.regex_full_match.
        self._graph_regex = "(?is).*(?:" + "|".join(parts) + ").*"
        self._check_re2()

    def _check_re2(self) -> None:
        import tensorflow as tf

        try:
            tf.strings.regex_full_match(tf.constant([""]), self._graph_regex)
        except tf.errors.InvalidArgumentError as e:
            raise ValueError(
                f"patterns: not valid in RE2, TensorFlow's regex engine ({e.message})"
            ) from None

    def verdicts(self, texts: Sequence[str]) -> list[Verdict]:
        out = []
        for text in texts:
            matches = tuple(dict.fromkeys(m.group(0) for m in self._regex.finditer(text)))
            if not matches:
                out.append(Verdict(False, (), text))
            elif self.action == "redact":
                out.append(Verdict(True, matches, self._regex.sub(self.redaction, text)))
            elif self.action == "block":
                out.append(Verdict(True, matches, self.message))
            else:
                out.append(Verdict(True, matches, text))
        return out

    def flag_graph(self, texts):
        """String `(B,)` to bool `(B,)`: which texts match (RE2, core TensorFlow ops)."""
        import tensorflow as tf

        return tf.strings.regex_full_match(texts, self._graph_regex)

    def redact_graph(self, texts):
        """String `(B,)`: every match replaced by `redaction` (RE2, as `verdicts` does in
        Python)."""
        import tensorflow as tf

        rewrite = self.redaction.replace("\\", "\\\\")  # RE2 rewrites read \1 as a group
        return tf.strings.regex_replace(texts, "(?i)(?:" + "|".join(self._parts) + ")", rewrite)

    def get_config(self) -> dict:
        return {
            "words": self.words,
            "patterns": self.patterns,
            "action": self.action,
            "message": self.message,
            "redaction": self.redaction,
        }
