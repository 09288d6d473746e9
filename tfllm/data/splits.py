"""The container every dataset's `token_splits` returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Splits(Generic[T]):
    """A dataset's training and validation parts, encoded (token arrays, or the row arrays of
    a `RowDataset`).

    Example:

    >>> import numpy as np
    >>> splits = Splits(train=np.arange(8), val=np.arange(2))
    >>> len(splits.train), len(splits.val)
    (8, 2)
    """

    train: T
    val: T
