"""A character tokenizer whose vocabulary is built from a corpus."""

from __future__ import annotations

from collections.abc import Iterable

import tensorflow as tf

from tfllm.components.tokenizers.base import Tokenizer, _Cache
from tfllm.registry import register

DEFAULT_SPECIALS = {"pad": "<pad>", "unk": "<unk>", "eos": "<eos>"}


@register("tokenizer", "char")
class CharTokenizer(Tokenizer):
    """One token per Unicode character; the vocabulary is the corpus's characters.

    Characters get ids `0..C-1` in code-point order (so for tiny Shakespeare the ids are
    nanoGPT's), the special tokens follow, then `extra_ids` sentinels `<extra_id_0>`, ... (for
    T5's span corruption). Characters outside the vocabulary map to `unk`.
    The graph op is a sorted search, so no lookup-table resource is needed in a SavedModel.

    Args:
        vocabulary: str or list of single characters, or None until `adapt` is called.
        special_tokens: role -> token string; defaults to pad, unk and eos.
        extra_ids: int. Sentinel tokens appended to the vocabulary (never produced from text).

    Call arguments:
        inputs: string tensor `(B,)`; returns ragged int32 ids `(B, None)`.

    Example:

    >>> tok = CharTokenizer(vocabulary="abc ")
    >>> tok.encode("a cab")["input_ids"]
    [1, 0, 3, 1, 2]
    >>> tok.decode([1, 0, 3])
    'a c'
    """

    def __init__(
        self,
        vocabulary: str | list[str] | None = None,
        special_tokens: dict[str, str] | None = None,
        extra_ids: int = 0,
        **kwargs,
    ):
        specials = dict(DEFAULT_SPECIALS if special_tokens is None else special_tokens)
        super().__init__(special_tokens=specials, **kwargs)
        if not isinstance(extra_ids, int) or extra_ids < 0:
            raise ValueError(f"extra_ids must be a non-negative integer, got {extra_ids!r}")
        self.extra_ids = extra_ids
        self.vocabulary: list[str] | None = None
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)

    def set_vocabulary(self, vocabulary: Iterable[str]) -> None:
        chars = sorted(set(vocabulary))
        bad = [c for c in chars if len(c) != 1]
        if bad:
            raise ValueError(f"vocabulary entries must be single characters, got {bad[0]!r}")
        if not chars:
            raise ValueError("vocabulary is empty")
        clash = [t for t in self.special_tokens.values() if t in chars]
        if clash:
            raise ValueError(f"special token {clash[0]!r} is also a vocabulary character")
        self.vocabulary = chars
        self._tables = _Cache()

    def adapt(self, texts: Iterable[str]) -> None:
        """Build the vocabulary from the characters in `texts`."""
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        self.set_vocabulary(seen)

    def is_trained(self) -> bool:
        return self.vocabulary is not None

    def _require_vocabulary(self) -> list[str]:
        if self.vocabulary is None:
            raise ValueError("CharTokenizer has no vocabulary yet: pass one or call adapt()")
        return self.vocabulary

    @property
    def vocabulary_size(self) -> int:
        return len(self._require_vocabulary()) + len(self.special_tokens) + self.extra_ids

    def _token_bytes(self) -> list[bytes]:
        chars = [c.encode("utf-8") for c in self._require_vocabulary()]
        specials = list(dict.fromkeys(self.special_tokens.values()))
        sentinels = [f"<extra_id_{i}>" for i in range(self.extra_ids)]
        return chars + [s.encode("utf-8") for s in specials + sentinels]

    def _codepoints(self):
        if "codepoints" not in self._tables:  # cache the list, not a tensor of one graph
            self._tables["codepoints"] = [ord(c) for c in self._require_vocabulary()]
        return tf.constant(self._tables["codepoints"], dtype=tf.int32)

    def call(self, inputs):
        return self._in_graph(self._ids, inputs, eager_calls=2)

    def _ids(self, inputs):
        codepoints = self._codepoints()  # (C,) sorted
        chars = tf.strings.unicode_decode(
            inputs, "UTF-8", errors="replace", replacement_char=0xFFFD
        )  # (B, None)
        flat = chars.flat_values
        index = tf.searchsorted(codepoints, flat, side="left")
        clipped = tf.minimum(index, tf.shape(codepoints)[0] - 1)
        found = tf.gather(codepoints, clipped) == flat
        unk = self.unk_id
        ids = tf.where(found, clipped, -1 if unk is None else unk)
        return chars.with_flat_values(tf.cast(ids, tf.int32))

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary="".join(self.vocabulary) if self.vocabulary else None,
            extra_ids=self.extra_ids,
        )
        return config
