"""Files written whole or not at all: a write goes to a temporary sibling that is renamed over
the target only once complete, so a full disk, a kill or Ctrl-C leaves the old file (or none),
never a truncated one."""

from __future__ import annotations

import os
import tempfile


def atomic_write(path: str, data: str | bytes) -> str:
    """Write `data` to `path` atomically (text as UTF-8); returns `path`.

    >>> import os, tempfile
    >>> p = atomic_write(os.path.join(tempfile.mkdtemp(), "a.txt"), "hello")
    >>> open(p).read()
    'hello'
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    return path
