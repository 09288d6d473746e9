"""A byte-level tokenizer: UTF-8 bytes are the tokens."""

from __future__ import annotations

import tensorflow as tf

from tfllm.components.tokenizers.base import Tokenizer
from tfllm.registry import register

DEFAULT_SPECIALS = {"pad": "<pad>", "bos": "<bos>", "eos": "<eos>"}


@register("tokenizer", "byte")
class ByteTokenizer(Tokenizer):
    """Ids `0..255` are the UTF-8 bytes; special tokens take ids from 256 on.

    Any string, in any script, encodes without unknown tokens, and `decode(encode(s)) == s`.
    Decoding a byte sequence that is not valid UTF-8 (a model can generate one) replaces the
    bad bytes with U+FFFD.

    Args:
        special_tokens: role -> token string; defaults to pad, bos and eos.

    Call arguments:
        inputs: string tensor `(B,)`; returns ragged int32 ids `(B, None)`.

    Example:

    >>> tok = ByteTokenizer()
    >>> tok.encode("hé")["input_ids"]
    [104, 195, 169]
    >>> tok.decode([104, 195, 169])
    'hé'
    """

    def __init__(self, special_tokens: dict[str, str] | None = None, **kwargs):
        specials = dict(DEFAULT_SPECIALS if special_tokens is None else special_tokens)
        super().__init__(special_tokens=specials, **kwargs)

    @property
    def vocabulary_size(self) -> int:
        return 256 + len(set(self.special_tokens.values()))

    def _token_bytes(self) -> list[bytes]:
        specials = list(dict.fromkeys(self.special_tokens.values()))
        return [bytes([i]) for i in range(256)] + [s.encode("utf-8") for s in specials]

    def call(self, inputs):
        return self._in_graph(self._ids, inputs, eager_calls=2)

    def _ids(self, inputs):
        pieces = tf.strings.bytes_split(inputs)  # (B, None) one-byte strings
        flat = tf.io.decode_raw(pieces.flat_values, tf.uint8, fixed_length=1)  # (N, 1)
        return pieces.with_flat_values(tf.cast(tf.reshape(flat, [-1]), tf.int32))
