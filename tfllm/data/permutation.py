"""A seeded permutation of `0 .. n-1` that maps any index on its own, in constant time.

Shuffling the blocks of a corpus of a few hundred million tokens with a materialized
permutation costs memory and time on every step; a keyed bijection (a small Feistel network,
cycle-walked into range) gives the `i`-th element of the epoch's order directly, so a batch is
a pure function of the step however large the corpus is.
"""

from __future__ import annotations

import numpy as np

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer: a bijective avalanche of 64-bit words (uint64 arrays wrap).

    >>> int(mix64(np.asarray([1], np.uint64))[0]) != 1
    True
    """
    x = np.asarray(x, np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def round_keys(*words: int, rounds: int = 4) -> np.ndarray:
    """`rounds` 64-bit keys derived from integers (a seed, an epoch, ...)."""
    state = np.uint64(0x9E3779B97F4A7C15)
    for w in words:
        state = mix64(np.asarray([state ^ np.uint64(w & 0xFFFFFFFFFFFFFFFF)], np.uint64))[0]
    return mix64(state ^ np.arange(1, rounds + 1, dtype=np.uint64))


def permute(index: np.ndarray, n: int, *key: int) -> np.ndarray:
    """The images of `index` (integers in `[0, n)`) under the permutation of `range(n)` that
    `key` selects.

    >>> p = permute(np.arange(10), 10, 7, 0)
    >>> sorted(p.tolist()) == list(range(10))
    True
    >>> bool((permute(np.arange(10), 10, 7, 1) != p).any())
    True
    """
    index = np.asarray(index, np.int64)
    if n <= 0:
        raise ValueError(f"permute: n must be positive, got {n}")
    if index.size and (index.min() < 0 or index.max() >= n):
        raise ValueError(f"permute: indices must lie in [0, {n})")
    if n == 1:
        return np.zeros_like(index)
    half = max(1, (int(n - 1).bit_length() + 1) // 2)  # the domain 2**(2*half) is < 4n
    low = np.uint64((1 << half) - 1)
    shift = np.uint64(half)
    keys = round_keys(*key)

    def encrypt(x: np.ndarray) -> np.ndarray:
        left, right = x >> shift, x & low
        for k in keys:
            left, right = right, left ^ (mix64(right ^ k) & low)
        return (left << shift) | right

    x = encrypt(index.astype(np.uint64))
    outside = x >= np.uint64(n)
    while outside.any():  # cycle-walking: a bijection of the domain stays one on [0, n)
        x[outside] = encrypt(x[outside])
        outside = x >= np.uint64(n)
    return x.astype(np.int64)
