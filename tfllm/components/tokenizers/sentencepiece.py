"""SentencePiece (unigram or BPE, with byte fallback), as tf-text's op through keras-hub."""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
import tensorflow as tf

from tfllm.components.tokenizers.base import Tokenizer, _Cache, keras_hub_op
from tfllm.files import atomic_write
from tfllm.registry import register

MODEL_FILE = "spm.model"
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
# How the sentencepiece library writes an unknown piece when it decodes.
UNKNOWN_SURFACE = " \u2047 "


def read_proto(path: str) -> bytes:
    if os.path.isdir(path):
        for name in (MODEL_FILE, "tokenizer.model", "spiece.model"):
            if os.path.exists(os.path.join(path, name)):
                return read_proto(os.path.join(path, name))
        raise FileNotFoundError(f"tokenizer.path: {path} has no .model file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer.path: no such file or directory: {path}")
    with open(path, "rb") as f:
        return f.read()


@register("tokenizer", "sentencepiece")
class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model (unigram or BPE, byte fallback), ids equal to the `sentencepiece`
    library's.

    Args:
        path: a `.model` file or a directory holding one.
        proto: the serialized model (instead of `path`).
        special_tokens: role -> piece; defaults to the model's own unk, bos, eos and pad.
        vocab_size: size to train to when `adapt` is called (no `path`/`proto`).
        model_type: `unigram` or `bpe`, for training.
        byte_fallback: for training: unknown characters become byte pieces, so any text
            round-trips.

    Call arguments:
        inputs: string tensor `(B,)`; returns ragged int32 ids `(B, None)`.

    Example:

    >>> tok = SentencePieceTokenizer(path="tokenizer.model")  # doctest: +SKIP
    >>> tok.decode(tok.encode("Hello")["input_ids"])  # doctest: +SKIP
    'Hello'

    Reference: Kudo & Richardson 2018.
    """

    def __init__(
        self,
        path: str | None = None,
        proto: bytes | None = None,
        special_tokens: dict[str, str] | None = None,
        vocab_size: int | None = None,
        model_type: str = "unigram",
        byte_fallback: bool = True,
        **kwargs,
    ):
        super().__init__(special_tokens={}, **kwargs)
        if model_type not in ("unigram", "bpe"):
            raise ValueError(f"model_type must be 'unigram' or 'bpe', got '{model_type}'")
        self.source_path = path  # `path` is a Keras Layer property
        self.vocab_size = vocab_size
        self.model_type = model_type
        self.byte_fallback = byte_fallback
        self._explicit_specials = special_tokens
        self.proto: bytes | None = None
        self._inner: Any = None
        self._pieces: list[str] = []
        self._unknown_ids: set[int] = set()
        self._strips_first_space = False
        if path is not None:
            proto = read_proto(path)
        if proto is not None:
            self.set_proto(proto)

    def set_proto(self, proto: bytes) -> None:
        import keras_hub
        import sentencepiece as spm

        processor = spm.SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(proto)
        except RuntimeError as e:
            raise ValueError(f"not a SentencePiece model: {e}") from None
        self._pieces = [processor.IdToPiece(i) for i in range(processor.GetPieceSize())]
        self._unknown_ids = {i for i in range(len(self._pieces)) if processor.IsUnknown(i)}
        # The library drops the space of the first piece's leading "▁" when the model adds a
        # dummy prefix or removes extra whitespace (that space came from normalization).
        from sentencepiece import sentencepiece_model_pb2

        spec = sentencepiece_model_pb2.ModelProto()
        spec.ParseFromString(proto)
        normalizer = spec.normalizer_spec
        self._strips_first_space = bool(
            normalizer.add_dummy_prefix or normalizer.remove_extra_whitespaces
        )
        specials = self._explicit_specials
        if specials is None:
            specials = {}
            for role, pid in (
                ("unk", processor.unk_id()),
                ("bos", processor.bos_id()),
                ("eos", processor.eos_id()),
                ("pad", processor.pad_id()),
            ):
                if pid >= 0:
                    specials[role] = self._pieces[pid]
        missing = [t for t in specials.values() if t not in self._pieces]
        if missing:
            raise ValueError(f"special token {missing[0]!r} is not a piece of the model")
        self.special_tokens = dict(specials)
        self.proto = proto
        self._attach_op(
            keras_hub.tokenizers.SentencePieceTokenizer(
                proto=proto, dtype="int32", _allow_python_workflow=False
            )
        )
        self._tables = _Cache()

    def adapt(self, texts) -> None:
        """Train a model on `texts` with the `sentencepiece` trainer.

        Trained models keep text as it is (identity normalization, whitespace preserved, no
        dummy-prefix space), so with byte fallback `decode(encode(s)) == s` for any string;
        loaded models normalize as they were made.
        """
        import io

        import sentencepiece as spm

        if self.vocab_size is None:
            raise ValueError("set vocab_size to train a SentencePiece tokenizer")
        lines = [line for text in texts for line in text.splitlines(keepends=True) if line]
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines),
                model_writer=model,
                vocab_size=self.vocab_size,
                model_type=self.model_type,
                byte_fallback=self.byte_fallback,
                character_coverage=1.0 if self.byte_fallback else 0.9995,
                pad_id=3,
                unk_id=0,
                bos_id=1,
                eos_id=2,
                minloglevel=2,
                hard_vocab_limit=False,
                split_digits=True,
                # Lossless for language modelling: keep newlines and runs of spaces.
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                add_dummy_prefix=False,
                allow_whitespace_only_pieces=True,
            )
        except RuntimeError as e:
            raise ValueError(
                f"vocab_size={self.vocab_size}: sentencepiece could not train "
                f"({str(e).split('] ')[-1]})"
            ) from None
        self.set_proto(model.getvalue())

    def is_trained(self) -> bool:
        return self.proto is not None

    def _require(self) -> bytes:
        if self.proto is None:
            raise ValueError("SentencePieceTokenizer has no model: pass path= or proto=")
        return self.proto

    @property
    def vocabulary_size(self) -> int:
        self._require()
        return len(self._pieces)

    def _token_bytes(self) -> list[bytes]:
        self._require()
        out = []
        for i, piece in enumerate(self._pieces):
            byte = _BYTE_PIECE.match(piece)
            if byte:
                out.append(bytes([int(byte.group(1), 16)]))
            elif i in self._unknown_ids:
                out.append(UNKNOWN_SURFACE.encode("utf-8"))
            else:
                out.append(piece.replace("\u2581", " ").encode("utf-8"))
        return out

    def control_token_ids(self) -> list[int]:
        """The special tokens but the unknown one, which the library writes as " ⁇ "."""
        return [i for i in super().control_token_ids() if i not in self._unknown_ids]

    def _token_strings(self) -> list[str]:
        self._require()
        return list(self._pieces)

    def call(self, inputs):
        self._require()
        return self._in_graph(self._tokenize, inputs)

    def _tokenize(self, inputs):
        return keras_hub_op(self._inner.tokenize, inputs)

    def _join_ids(self, ids):
        """The pieces' text joined as the sentencepiece library decodes it: byte pieces as
        bytes, "▁" as a space, and (for models that add a dummy prefix) the space of a leading
        "▁" on the first piece dropped, once."""
        text = super()._join_ids(ids)
        if not self._strips_first_space:
            return text
        if "space" not in self._tables:
            self._tables["space"] = np.asarray([p.startswith("\u2581") for p in self._pieces])
        leading = tf.constant(self._tables["space"])
        first = tf.reduce_any(tf.gather(leading, ids[:, :1]), axis=-1)  # (B,)
        lengths = tf.strings.length(text)
        start = tf.minimum(tf.ones_like(lengths), lengths)  # substr refuses a start past the end
        return tf.where(first, tf.strings.substr(text, start, lengths), text)

    def get_config(self):
        config = super().get_config()
        config.update(
            path=None,
            special_tokens=dict(self.special_tokens),
            vocab_size=self.vocab_size,
            model_type=self.model_type,
            byte_fallback=self.byte_fallback,
        )
        return config

    def save_assets(self, dir_path: str) -> None:
        atomic_write(os.path.join(dir_path, MODEL_FILE), self._require())

    def load_assets(self, dir_path: str) -> None:
        self.set_proto(read_proto(os.path.join(dir_path, MODEL_FILE)))
