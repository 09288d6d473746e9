"""The tokenizer contract: TF ops for graphs (and SavedModels), a Python API for people."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfllm.components.tokenizers.saved import CONFIG_FILE
from tfllm.files import atomic_write

SPECIAL_ROLES = ("pad", "unk", "bos", "eos", "mask", "cls", "sep")


class _Cache:
    """Derived lookup structures. Not a dict, so TensorFlow's object tracking (SavedModel,
    checkpoints) leaves it alone."""

    def __init__(self):
        self._items: dict[Any, Any] = {}

    def __contains__(self, key):
        return key in self._items

    def __getitem__(self, key):
        return self._items[key]

    def __setitem__(self, key, value):
        self._items[key] = value


def keras_hub_op(fn, inputs):
    """Call a keras-hub tokenizer method and keep TensorFlow outputs.

    Outside a `tf.function`, keras-hub turns ragged outputs into Python lists; tfllm's contract
    is tensors everywhere.
    """
    from keras_hub.src.utils.tensor_utils import no_convert_scope

    with no_convert_scope():
        return fn(inputs)


class Tokenizer(keras.layers.Layer):
    """Base class of registered tokenizers.

    Graph side (usable inside `tf.function` and SavedModels): calling the layer maps a string
    tensor `(B,)` to ragged int32 ids `(B, None)`; `detokenize` maps ids back to strings.
    Python side: `tokenize`, `encode`, `decode`, `batch_decode`, `convert_tokens_to_ids`,
    `convert_ids_to_tokens`. Subclasses define `_token_bytes()` (every id's surface bytes, used
    to detokenize) and `call`.

    Args:
        special_tokens: dict mapping roles (`pad`, `unk`, `bos`, `eos`, `mask`, `cls`, `sep`)
            to token strings. Subclasses decide where those tokens live in the vocabulary.
        **kwargs: Passed to `keras.layers.Layer`.
    """

    def __init__(self, special_tokens: dict[str, str] | None = None, **kwargs):
        kwargs.setdefault("trainable", False)
        kwargs.setdefault("dtype", "int32")
        super().__init__(**kwargs)
        special_tokens = dict(special_tokens or {})
        for role in special_tokens:
            if role not in SPECIAL_ROLES:
                raise ValueError(
                    f"special_tokens: unknown role '{role}'; roles are {', '.join(SPECIAL_ROLES)}"
                )
        self.special_tokens = special_tokens
        self._tables = _Cache()

    def _attach_op(self, op) -> None:
        """Set the keras-hub layer that does the graph work (also after the layer is built:
        loading a vocabulary replaces it)."""
        tracker = getattr(self, "_tracker", None)
        locked = tracker is not None and tracker.locked
        if locked:
            tracker.unlock()
        try:
            self._inner = op
        finally:
            if locked:
                tracker.lock()
        self._tables = _Cache()

    def _in_graph(self, fn, inputs, eager_calls: int = 0):
        """Run `fn(strings (B,))` as one traced graph when called eagerly (after
        `eager_calls` calls run eagerly).

        keras-hub's ops call small `tf.function`s per merge step; eagerly they retrace for
        every new shape. One traced graph per tokenizer is faster and is exactly the graph a
        SavedModel holds.
        """
        if not tf.executing_eagerly():
            return fn(inputs)
        run = self._traced(fn.__name__, fn, tf.TensorSpec([None], tf.string), eager_calls)
        inputs = tf.convert_to_tensor(inputs, tf.string)
        if inputs.shape.rank == 0:
            return run(inputs[None])[0]
        return run(inputs)

    def _traced(self, name: str, fn, spec, eager_calls: int = 0):
        """`fn` of one input of `spec` as one traced graph, made once per vocabulary and kept
        under `name`; for the first `eager_calls` calls `fn` itself (tracing costs more than a
        few eager calls, and a tokenizer made for one string never pays it)."""
        key = ("traced", name)
        if key in self._tables:
            return self._tables[key]
        calls = self._tables[("calls", key)] if ("calls", key) in self._tables else 0
        if calls < eager_calls:
            self._tables[("calls", key)] = calls + 1
            return fn
        self._tables[key] = tf.function(fn, input_signature=[spec], autograph=False)
        return self._tables[key]

    # ----- vocabulary -------------------------------------------------------------------------
    def is_trained(self) -> bool:
        """False while a trainable tokenizer still needs `adapt(texts)`."""
        return True

    @property
    def vocabulary_size(self) -> int:
        raise NotImplementedError

    def _token_bytes(self) -> list[bytes]:
        """The surface bytes of every id, in id order (special tokens as their own text)."""
        raise NotImplementedError

    def piece_lengths(self) -> list[int]:
        """How many bytes of the text each id stands for, in id order (a leading space
        included): how token offsets into a word are measured (`tfllm.tasks.qa_reading`)."""
        return [len(t) for t in self._token_bytes()]

    def _token_strings(self) -> list[str]:
        """Every id's token as a string, in id order (what `id_to_token` shows)."""
        return [t.decode("utf-8", errors="replace") for t in self._token_bytes()]

    def get_vocabulary(self) -> list[str]:
        return self._token_strings()

    def special_token_ids(self) -> dict[str, int]:
        return {role: self.token_to_id(tok) for role, tok in self.special_tokens.items()}

    def boundary_ids(self) -> tuple[int | None, int | None]:
        """The ids a whole text is wrapped in for an encoder or an embedding: `[CLS]` and
        `[SEP]` (BERT), else bos and eos, when the tokenizer has them."""
        ids = self.special_token_ids()
        return ids.get("cls", ids.get("bos")), ids.get("sep", ids.get("eos"))

    def control_token_ids(self) -> list[int]:
        """Ids that `skip_special_tokens` drops: the special tokens and the sentinels
        (subclasses add more)."""
        return list(self.special_token_ids().values()) + self.sentinel_ids()

    def sentinel_ids(self) -> list[int]:
        """Ids of T5's sentinel tokens `<extra_id_0>`, `<extra_id_1>`, ... (in that order, as
        many as the vocabulary holds): what span corruption replaces each noise span with."""
        index, ids = self._token_index(), []
        while f"<extra_id_{len(ids)}>" in index:
            ids.append(index[f"<extra_id_{len(ids)}>"])
        return ids

    def token_to_id(self, token: str) -> int:
        index = self._token_index()
        if token not in index:
            raise KeyError(f"token {token!r} is not in the vocabulary")
        return index[token]

    def id_to_token(self, token_id: int) -> str:
        table = self._token_list()
        if not 0 <= token_id < len(table):
            raise ValueError(f"token id {token_id} is outside [0, {len(table)})")
        return table[token_id]

    def _token_list(self) -> list[str]:
        if "strings" not in self._tables:
            self._tables["strings"] = self._token_strings()
        return self._tables["strings"]

    def _token_index(self) -> dict[str, int]:
        if "index" not in self._tables:
            index: dict[str, int] = {}
            for i, t in enumerate(self._token_list()):
                index.setdefault(t, i)
            self._tables["index"] = index
        return self._tables["index"]

    def _id(self, role: str) -> int | None:
        tok = self.special_tokens.get(role)
        return None if tok is None else self.token_to_id(tok)

    @property
    def pad_id(self) -> int | None:
        return self._id("pad")

    @property
    def bos_id(self) -> int | None:
        return self._id("bos")

    # Whether generation prompts start with bos (tokenizers that know better override it).
    add_bos: bool = True

    @property
    def prompt_bos_id(self) -> int | None:
        """The id a generation prompt starts with: bos, unless `add_bos` is off."""
        return self.bos_id if self.add_bos else None

    @property
    def eos_id(self) -> int | None:
        return self._id("eos")

    @property
    def unk_id(self) -> int | None:
        return self._id("unk")

    # ----- graph ops --------------------------------------------------------------------------
    def _graph_tables(self):
        """Token bytes and a special-token mask as constants of the current graph.

        The numpy arrays are cached, and eager tensors, never graph tensors: a tensor made
        while tracing one graph cannot be used from another.
        """
        if "graph" not in self._tables:
            strings = np.asarray(self._token_bytes(), dtype=object)
            special = np.zeros(self.vocabulary_size, dtype=bool)
            for tid in self.control_token_ids():
                special[tid] = True
            self._tables["graph"] = (strings, special)
        strings, special = self._tables["graph"]
        if not tf.executing_eagerly():
            return tf.constant(strings, dtype=tf.string), tf.constant(special)
        if "eager" not in self._tables:  # eager tensors belong to no graph: made once
            self._tables["eager"] = (tf.constant(strings, dtype=tf.string), tf.constant(special))
        return self._tables["eager"]

    def detokenize(self, token_ids, skip_special_tokens: bool = True):
        """Map ids `(B, T)` (dense or ragged) or `(T,)` to strings `(B,)` or a scalar string.

        Ids outside the vocabulary are dropped. Byte sequences that are not valid UTF-8 are
        repaired with U+FFFD, so the result is always valid UTF-8.
        """
        strings, special = self._graph_tables()
        ids = token_ids
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.convert_to_tensor(ids)
        scalar = ids.shape.rank == 1
        if scalar:
            ids = ids[None] if isinstance(ids, tf.RaggedTensor) else tf.expand_dims(ids, 0)
        # On flat values and their row ids (ragged masking runs hundreds of shape ops).
        if isinstance(ids, tf.RaggedTensor):
            flat, rows, nrows = ids.flat_values, ids.value_rowids(), ids.nrows()  # (N,) (N,) ()
        else:  # (B, T)
            nrows, width = tf.unstack(tf.shape(ids, out_type=tf.int64))
            flat = tf.reshape(ids, [-1])
            rows = tf.repeat(tf.range(nrows), width)
        flat = tf.cast(flat, tf.int32)
        keep = (flat >= 0) & (flat < self.vocabulary_size)
        if skip_special_tokens:
            inside = tf.clip_by_value(flat, 0, self.vocabulary_size - 1)
            keep &= ~tf.gather(special, inside)
        ids = tf.RaggedTensor.from_value_rowids(  # (B, None) the ids kept, in order
            tf.boolean_mask(flat, keep), tf.boolean_mask(rows, keep), nrows, validate=False
        )
        text = self._join_ids(ids)
        text = tf.strings.unicode_transcode(
            text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
        )
        return text[0] if scalar else text

    def _join_ids(self, ids):
        """Ragged valid ids `(B, None)` to byte strings `(B,)`: concatenated token bytes."""
        strings, _ = self._graph_tables()
        return tf.strings.reduce_join(tf.gather(strings, ids), axis=-1)

    # ----- python API -------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        """Split one string into token strings."""
        return self.convert_ids_to_tokens(self.encode_one(text))

    def encode_one(self, text: str) -> list[int]:
        """Ids of one string, without special tokens."""
        ids = self(tf.constant([text]))  # (1, None)
        return ids.flat_values.numpy().tolist()

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        if isinstance(tokens, str):
            return self.token_to_id(tokens)
        return [self.token_to_id(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> str | list[str]:
        if isinstance(ids, (int, np.integer)):
            return self.id_to_token(int(ids))
        return [self.id_to_token(int(i)) for i in ids]

    def encode(
        self,
        texts: str | Sequence[str],
        add_bos: bool = False,
        add_eos: bool = False,
        max_length: int | None = None,
        padding: bool | str = False,
        truncation: bool = False,
    ) -> dict[str, Any]:
        """Encode one string or a batch.

        Args:
            texts: A string or a list of strings.
            add_bos: Prepend the `bos` token (which must be configured).
            add_eos: Append the `eos` token (which must be configured).
            max_length: Length limit for truncation and `padding="max_length"`.
            padding: `False`, `True`/`"longest"` (pad to the longest) or `"max_length"`.
            truncation: Cut sequences to `max_length` (keeping the start).

        Returns:
            `{"input_ids", "attention_mask"}`: lists for a single string; for a batch, lists of
            lists, or int32 arrays when padded.
        """
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        if not batch:
            return {"input_ids": [], "attention_mask": []}
        ragged = self(tf.constant(batch, dtype=tf.string))
        seqs = [row.tolist() for row in ragged.numpy()]
        for role, flag in (("bos", add_bos), ("eos", add_eos)):
            if flag and self._id(role) is None:
                raise ValueError(f"add_{role}=True but no '{role}' special token is configured")
        bos, eos = self.bos_id, self.eos_id
        seqs = [([bos] if add_bos else []) + s + ([eos] if add_eos else []) for s in seqs]
        if truncation:
            if max_length is None:
                raise ValueError("truncation=True needs max_length")
            seqs = [s[:max_length] for s in seqs]
        masks = [[1] * len(s) for s in seqs]
        if padding:
            if self.pad_id is None:
                raise ValueError("padding needs a 'pad' special token")
            if padding == "max_length":
                if max_length is None:
                    raise ValueError("padding='max_length' needs max_length")
                width = max_length
            elif padding in (True, "longest"):
                width = max(len(s) for s in seqs)
            else:
                raise ValueError(
                    f"padding must be False, True, 'longest' or 'max_length', got {padding!r}"
                )
            masks = [m + [0] * (width - len(m)) for m in masks]
            seqs = [s + [self.pad_id] * (width - len(s)) for s in seqs]
            ids_out: Any = np.asarray(seqs, dtype=np.int32)
            mask_out: Any = np.asarray(masks, dtype=np.int32)
        else:
            ids_out, mask_out = seqs, masks
        if single:
            return {"input_ids": ids_out[0], "attention_mask": mask_out[0]}
        return {"input_ids": ids_out, "attention_mask": mask_out}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of one id sequence."""
        return self.batch_decode([ids], skip_special_tokens)[0]

    def batch_decode(self, batch: Sequence[Sequence[int]], skip_special_tokens: bool = True):
        """Texts of several id sequences (of any lengths)."""
        rows = [[int(i) for i in b] for b in batch]
        if not rows:
            return []
        # Padded with -1, which `detokenize` drops as outside the vocabulary.
        padded = np.full((len(rows), max(len(r) for r in rows)), -1, np.int32)
        for i, r in enumerate(rows):
            padded[i, : len(r)] = r
        skip = bool(skip_special_tokens)
        run = self._traced(
            f"detokenize(skip_special_tokens={skip})",
            functools.partial(self.detokenize, skip_special_tokens=skip),
            tf.TensorSpec([None, None], tf.int32),
            eager_calls=2,
        )
        return [t.decode("utf-8") for t in run(tf.constant(padded)).numpy()]

    # ----- Keras plumbing ---------------------------------------------------------------------
    def build(self, input_shape=None):
        self.built = True  # no weights: vocabularies are constants and lookup tables

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(tuple(inputs.shape) + (None,), dtype="int32", ragged=True)

    def get_config(self):
        config = super().get_config()
        config.update(special_tokens=dict(self.special_tokens))
        return config

    # ----- files ------------------------------------------------------------------------------
    def save_to_directory(self, directory: str) -> None:
        """Write any assets, then `tokenizer.json` (its Keras config), into `directory`.

        Every file is written atomically and `tokenizer.json` last, so an interrupted save (a
        full disk, a kill) never leaves a truncated file: at worst no `tokenizer.json` yet.
        """
        os.makedirs(directory, exist_ok=True)
        self.save_assets(directory)
        config = json.dumps(keras.saving.serialize_keras_object(self), indent=1)
        atomic_write(os.path.join(directory, CONFIG_FILE), config)

    def save_assets(self, dir_path: str) -> None:
        """Write vocabulary files (none for tokenizers whose config holds everything)."""

    def load_assets(self, dir_path: str) -> None:
        """Read what `save_assets` wrote."""


def load_tokenizer(directory: str) -> Tokenizer:
    """Load a tokenizer saved with `Tokenizer.save_to_directory`."""
    from tfllm import registry

    registry.ensure_loaded()
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {CONFIG_FILE} in {directory}: not a saved tokenizer")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        if not isinstance(config, dict):
            raise ValueError(f"expected a JSON object, found {type(config).__name__}")
        tokenizer = keras.saving.deserialize_keras_object(config)
        if not isinstance(tokenizer, Tokenizer):
            raise ValueError(f"it describes a {type(tokenizer).__name__}, not a tfllm tokenizer")
        tokenizer.load_assets(directory)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
        # A damaged or hand-edited file: one error naming it, never a traceback.
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise registry.ConfigError(
            f"tokenizer: {path} (or an asset beside it) is unreadable: {type(e).__name__}: "
            f"{reason}. Restore the folder from a copy, or for a run whose tokenizer was trained, "
            "delete it to train it again from the same data and config"
        ) from None
    return tokenizer
