"""The tokens of a prepared split, read by range straight from its shard files: nothing is
loaded up front, so memory does not grow with the corpus. Local shards are read with `pread`
(no mapping, so no resident pages); other paths (`gs://`, `s3://`, `hdfs://`) through
`tf.io.gfile`."""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Sequence

import numpy as np

from tfllm.registry import ConfigError


class TokenStore:
    """Shards `[(path, tokens), ...]` of one dtype, seen as one sequence of tokens.

    A shard whose size is not `tokens × itemsize` (truncated, or from another preparation) is
    an error naming it, before any training step.

    Example:

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> np.arange(5, dtype="<u2").tofile(os.path.join(d, "a"))
    >>> np.arange(5, 8, dtype="<u2").tofile(os.path.join(d, "b"))
    >>> store = TokenStore([(os.path.join(d, "a"), 5), (os.path.join(d, "b"), 3)], "<u2")
    >>> len(store), store.read(3, 4).tolist()
    (8, [3, 4, 5, 6])
    >>> store.windows(np.array([0, 4]), 3).tolist()
    [[0, 1, 2], [4, 5, 6]]
    """

    def __init__(self, shards: Sequence[tuple[str, int]], dtype: str):
        self.dtype = np.dtype(dtype)
        self.paths = [p for p, n in shards if n > 0]
        counts = [int(n) for _, n in shards if n > 0]
        self.ends = list(np.cumsum(counts, dtype=np.int64).tolist())
        self.starts = [0] + self.ends[:-1]
        for path, n in zip(self.paths, counts, strict=True):
            want = n * self.dtype.itemsize
            got = _size(path)
            if got != want:
                raise ConfigError(
                    f"data.path: shard {path} holds {got:,} bytes, but the manifest says "
                    f"{n:,} tokens ({want:,} bytes): it is truncated or from another "
                    "preparation. Prepare the dataset again"
                )
        self._files: dict[int, object] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def __getstate__(self):  # open files stay with the process that opened them
        state = dict(self.__dict__)
        state["_files"], state["_lock"] = {}, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def read(self, start: int, count: int) -> np.ndarray:
        """Tokens `[start, start + count)` as int32."""
        if start < 0 or start + count > len(self):
            raise IndexError(f"tokens [{start}, {start + count}) outside [0, {len(self)})")
        out = np.empty(count, np.int32)
        at = 0
        k = bisect.bisect_right(self.ends, start)
        while at < count:
            offset = start + at - self.starts[k]
            n = min(count - at, self.ends[k] - self.starts[k] - offset)
            out[at : at + n] = self._read_shard(k, offset, n)
            at += n
            k += 1
        return out

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """`(len(starts), length)` int32 windows beginning at `starts`."""
        return (
            np.stack([self.read(int(s), length) for s in starts])
            if len(starts)
            else (np.zeros([0, length], np.int32))
        )

    def _read_shard(self, k: int, offset: int, n: int) -> np.ndarray:
        size = self.dtype.itemsize
        path = self.paths[k]
        if "://" not in path:
            fd = self._files.get(k)
            if fd is None:
                fd = self._files[k] = os.open(path, os.O_RDONLY)
            data = os.pread(fd, n * size, offset * size)  # type: ignore[arg-type]
        else:
            import tensorflow as tf

            with self._lock:
                f = self._files.get(k)
                if f is None:
                    f = self._files[k] = tf.io.gfile.GFile(path, "rb")
                f.seek(offset * size)  # type: ignore[attr-defined]
                data = f.read(n * size)  # type: ignore[attr-defined]
        if len(data) != n * size:
            raise ConfigError(f"data.path: shard {path} ended early (truncated while training?)")
        return np.frombuffer(data, self.dtype)

    def close(self) -> None:
        for f in self._files.values():
            if isinstance(f, int):
                os.close(f)
            else:
                f.close()  # type: ignore[attr-defined]
        self._files = {}

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _size(path: str) -> int:
    if "://" not in path:
        try:
            return os.path.getsize(path)
        except OSError:
            raise ConfigError(f"data.path: shard {path} is missing") from None
    import tensorflow as tf

    try:
        return tf.io.gfile.stat(path).length
    except tf.errors.NotFoundError:
        raise ConfigError(f"data.path: shard {path} is missing") from None
