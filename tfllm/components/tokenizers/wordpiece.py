"""WordPiece (BERT), running as tf-text's FastWordpiece op through keras-hub."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import tensorflow as tf

from tfllm.components.tokenizers.base import Tokenizer, _Cache, keras_hub_op
from tfllm.files import atomic_write
from tfllm.registry import register

VOCAB_FILE = "vocab.txt"
BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


def read_wordpiece(path: str) -> tuple[list[str], dict[str, Any]]:
    """A vocabulary (and normalizer options) from `vocab.txt`, an HF `tokenizer.json`, or a
    directory holding either."""
    if os.path.isdir(path):
        for name in ("tokenizer.json", VOCAB_FILE):
            if os.path.exists(os.path.join(path, name)):
                return read_wordpiece(os.path.join(path, name))
        raise FileNotFoundError(f"tokenizer.path: {path} has no tokenizer.json or vocab.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer.path: no such file or directory: {path}")
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
        model = spec.get("model", {})
        if model.get("type") != "WordPiece":
            raise ValueError(f"{path}: model type is {model.get('type')!r}, not WordPiece")
        vocab = sorted(model["vocab"], key=model["vocab"].get)
        options: dict[str, Any] = {}
        norm = spec.get("normalizer") or {}
        if norm.get("type") == "BertNormalizer":
            options["lowercase"] = bool(norm.get("lowercase", True))
            accents = norm.get("strip_accents")
            options["strip_accents"] = options["lowercase"] if accents is None else bool(accents)
        return vocab, options
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.rstrip("\n")], {}


@register("tokenizer", "wordpiece")
class WordPieceTokenizer(Tokenizer):
    """BERT's WordPiece: lower-casing and accent stripping, punctuation and CJK splitting,
    greedy longest-match subwords with `##` continuations.

    Args:
        path: `vocab.txt`, an HF `tokenizer.json` (its normalizer options are used unless
            given here), or a directory holding one.
        vocabulary: list of tokens in id order (instead of `path`).
        lowercase: bool or None. Lower-case input (None: from the file, else True).
        strip_accents: bool or None. Remove accents (None: follow `lowercase`, as BERT does).
        special_tokens: role -> token; defaults to BERT's `[PAD] [UNK] [CLS] [SEP] [MASK]`
            (those present in the vocabulary).
        vocab_size: size to train to when `adapt` is called (no `path`/`vocabulary`).

    Call arguments:
        inputs: string tensor `(B,)`; returns ragged int32 ids `(B, None)`.

    Example:

    >>> tok = WordPieceTokenizer(vocabulary=["[UNK]", "the", "qu", "##ick", "."])
    >>> tok.encode("The quick.")["input_ids"]
    [1, 2, 3, 4]

    Reference: Wu et al. 2016; Devlin et al. 2019.
    """

    def __init__(
        self,
        path: str | None = None,
        vocabulary: list[str] | None = None,
        lowercase: bool | None = None,
        strip_accents: bool | None = None,
        special_tokens: dict[str, str] | None = None,
        vocab_size: int | None = None,
        **kwargs,
    ):
        super().__init__(special_tokens={}, **kwargs)
        self.source_path = path  # `path` is a Keras Layer property
        self.vocab_size = vocab_size
        self._options = {"lowercase": lowercase, "strip_accents": strip_accents}
        self._explicit_specials = special_tokens
        self.vocabulary: list[str] | None = None
        self._inner: Any = None
        file_options: dict[str, Any] = {}
        if path is not None:
            vocabulary, file_options = read_wordpiece(path)
        self._file_options = file_options
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)

    @property
    def lowercase(self) -> bool:
        value = self._options["lowercase"]
        return bool(self._file_options.get("lowercase", True) if value is None else value)

    @property
    def strip_accents(self) -> bool:
        value = self._options["strip_accents"]
        if value is None:
            value = self._file_options.get("strip_accents", self.lowercase)
        return bool(value)

    def set_vocabulary(self, vocabulary: list[str]) -> None:
        import keras_hub

        vocab = list(vocabulary)
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocabulary has repeated tokens")
        specials = self._explicit_specials
        if specials is None:
            specials = {r: t for r, t in BERT_SPECIALS.items() if t in vocab}
        missing = [t for t in specials.values() if t not in vocab]
        if missing:
            raise ValueError(f"special token {missing[0]!r} is not in the vocabulary")
        self.special_tokens = dict(specials)
        unk = specials.get("unk", "[UNK]")
        if unk not in vocab:
            raise ValueError(f"the vocabulary needs an unknown token ({unk!r})")
        self.vocabulary = vocab
        # Normalization happens in `call`, the way Hugging Face's BertNormalizer does it:
        # keras-hub lower-cases with tf-text's NFKC case folding, which also rewrites
        # compatibility characters (U+2033 ″ becomes two U+2032 ′) and so changes ids.
        self._attach_op(
            keras_hub.tokenizers.WordPieceTokenizer(
                vocabulary=vocab,
                lowercase=False,
                strip_accents=False,
                oov_token=unk,
                dtype="int32",
                special_tokens=list(dict.fromkeys(specials.values())) or None,
                special_tokens_in_strings=True,
                _allow_python_workflow=False,  # always the TF ops that export
            )
        )
        self._tables = _Cache()

    def adapt(self, texts) -> None:
        """Learn a vocabulary from `texts` (tf-text's BERT vocabulary learner via keras-hub)."""
        import keras_hub

        if self.vocab_size is None:
            raise ValueError("set vocab_size to train a WordPiece tokenizer")
        specials = self._explicit_specials or BERT_SPECIALS
        lines = [line for text in texts for line in text.splitlines() if line.strip()]
        vocab = keras_hub.tokenizers.compute_word_piece_vocabulary(
            tf.data.Dataset.from_tensor_slices(lines).batch(1000),
            self.vocab_size,
            lowercase=self.lowercase,
            strip_accents=self.strip_accents,
            reserved_tokens=list(dict.fromkeys(specials.values())),
        )
        self._explicit_specials = dict(specials)
        self.set_vocabulary(vocab)

    def is_trained(self) -> bool:
        return self.vocabulary is not None

    def _require(self) -> list[str]:
        if self.vocabulary is None:
            raise ValueError("WordPieceTokenizer has no vocabulary: pass path= or vocabulary=")
        return self.vocabulary

    @property
    def vocabulary_size(self) -> int:
        return len(self._require())

    def _token_bytes(self) -> list[bytes]:
        return [t.encode("utf-8") for t in self._require()]

    def piece_lengths(self) -> list[int]:
        """A `##` continuation stands for the bytes after its `##`."""
        return [len(t.removeprefix("##").encode("utf-8")) for t in self._require()]

    def normalize(self, inputs):
        """BERT normalization as graph ops, as Hugging Face's BertNormalizer does it: drop
        control characters, whitespace (Unicode's, line and paragraph separators included) to
        spaces, strip accents (NFD, then remove combining marks), lower-case character by
        character (without NFKC, and without the final-sigma rule: Σ is always σ)."""
        import tensorflow_text as tf_text

        x = tf.strings.regex_replace(inputs, r"[\t\n\r\p{Zs}\x{2028}\x{2029}]", " ")
        x = tf.strings.regex_replace(x, r"[\x{0}\x{FFFD}\p{C}]", "")
        if self.strip_accents:
            x = tf_text.normalize_utf8(x, "NFD")
            x = tf.strings.regex_replace(x, r"\p{Mn}", "")
        if self.lowercase:
            # tf.strings.lower follows Unicode's context rule (a word-final Σ becomes ς);
            # lower-casing each character on its own gives σ.
            x = tf.strings.regex_replace(x, "\u03a3", "\u03c3")
            x = tf.strings.lower(x, encoding="utf-8")
        return x

    def _normalize_around_specials(self, inputs):
        """`normalize` applied to the text between special tokens written in it (`[CLS]`,
        `[SEP]` ...), which are kept as written: Hugging Face finds them in the raw text,
        before lower-casing could turn `[CLS]` into `[cls]`."""
        import tensorflow_text as tf_text

        specials = sorted(set(self.special_tokens.values()), key=len, reverse=True)
        if not specials:
            return self.normalize(inputs)
        pattern = "|".join(re.escape(s) for s in specials)
        pieces = tf_text.regex_split(inputs, pattern, pattern)  # (B, None), specials kept
        flat = pieces.flat_values
        is_special = tf.reduce_any(tf.equal(flat[:, None], tf.constant(specials)[None]), -1)
        flat = tf.where(is_special, flat, self.normalize(flat))
        return tf.strings.reduce_join(pieces.with_flat_values(flat), axis=-1, separator=" ")

    def call(self, inputs):
        self._require()
        return self._in_graph(self._tokenize, inputs)

    def _tokenize(self, inputs):
        return keras_hub_op(self._inner.tokenize, self._normalize_around_specials(inputs))

    def _join_ids(self, ids):
        strings, _ = self._graph_tables()
        text = tf.strings.reduce_join(tf.gather(strings, ids), axis=-1, separator=" ")
        return tf.strings.regex_replace(text, " ##", "")

    def get_config(self):
        config = super().get_config()
        config.update(
            path=None,
            lowercase=self.lowercase,
            strip_accents=self.strip_accents,
            special_tokens=dict(self.special_tokens),
            vocab_size=self.vocab_size,
        )
        return config

    def save_assets(self, dir_path: str) -> None:
        atomic_write(os.path.join(dir_path, VOCAB_FILE), "\n".join(self._require()) + "\n")

    def load_assets(self, dir_path: str) -> None:
        vocab, _ = read_wordpiece(os.path.join(dir_path, VOCAB_FILE))
        self.set_vocabulary(vocab)
