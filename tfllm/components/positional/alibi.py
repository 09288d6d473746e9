"""ALiBi: linear attention biases that penalise distance, one slope per head."""

from __future__ import annotations

import math

from keras import ops

from tfllm.components.positional.base import PositionalEncoding
from tfllm.registry import register


def alibi_slopes(num_heads: int) -> list[float]:
    """The geometric head slopes of Press et al. (with their rule for non-powers of two)."""

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        return power_of_two(num_heads)
    closest = 2 ** math.floor(math.log2(num_heads))
    extra = power_of_two(2 * closest)[0::2][: num_heads - closest]
    return power_of_two(closest) + extra


@register("positional", "alibi")
class ALiBi(PositionalEncoding):
    """Adds `-slope_h * |i - j|` to the attention logits of head `h` (query `i`, key `j`).

    Args:
        num_heads: int. Number of query heads (set by the model).

    Call arguments:
        x: `(B, T, D)` embeddings, returned unchanged (ALiBi acts in attention).

    Example:

    >>> import numpy as np
    >>> alibi = ALiBi(num_heads=4)
    >>> pos = np.arange(3, dtype="int32")
    >>> alibi.attention_bias(pos, pos).shape
    TensorShape([4, 3, 3])

    Reference: Press et al. 2022, "Train Short, Test Long: Attention with Linear Biases Enables
    Input Length Extrapolation".
    """

    def __init__(self, num_heads: int, **kwargs):
        super().__init__(**kwargs)
        if num_heads <= 0:
            raise ValueError(f"num_heads must be positive, got {num_heads}")
        self.num_heads = num_heads
        self._slopes = alibi_slopes(num_heads)

    def attention_bias(self, query_positions, key_positions):
        # query_positions: (Tq,), key_positions: (Tk,) -> (H, Tq, Tk)
        distance = ops.abs(
            ops.cast(query_positions, "float32")[:, None]
            - ops.cast(key_positions, "float32")[None, :]
        )
        slopes = ops.convert_to_tensor(self._slopes, dtype="float32")[:, None, None]
        return -slopes * distance[None]

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads)
        return config
