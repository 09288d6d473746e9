"""An LM head with tanh soft-capping of the logits."""

from __future__ import annotations

from keras import ops

from tfllm.components.heads.lm import LMHead
from tfllm.registry import register


@register("head", "softcap_lm")
class SoftcapLMHead(LMHead):
    """The `lm` head, its float32 logits soft-capped: `softcap * tanh(logits / softcap)`.

    Logits stay in `(-softcap, softcap)` and keep their order, which bounds the loss's
    sensitivity to runaway logits without clipping gradients to zero.

    Args:
        vocabulary_size: int. Number of tokens (set by the model).
        softcap: float. The bound on the absolute logit.
        tie_embeddings: bool. Reuse the token embedding.
        use_bias: bool. Learn a per-token bias.
        initializer_range: float. Standard deviation of the untied kernel's initializer.

    Call arguments:
        x: `(B, T, D)` hidden states.
        token_embedding: the backbone's token embedding (required when tied).

    Example:

    >>> import numpy as np
    >>> head = SoftcapLMHead(vocabulary_size=11, softcap=5.0, tie_embeddings=False)
    >>> head(np.ones((2, 3, 8), "float32")).shape
    TensorShape([2, 3, 11])

    Reference: Gemma Team 2024, "Gemma 2: Improving Open Language Models at a Practical Size".
    """

    def __init__(
        self,
        vocabulary_size: int,
        softcap: float = 30.0,
        tie_embeddings: bool = True,
        use_bias: bool = False,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        super().__init__(
            vocabulary_size=vocabulary_size,
            tie_embeddings=tie_embeddings,
            use_bias=use_bias,
            initializer_range=initializer_range,
            **kwargs,
        )
        if softcap <= 0:
            raise ValueError(f"softcap must be positive, got {softcap}")
        self.softcap = softcap

    def call(self, x, token_embedding=None):
        logits = super().call(x, token_embedding=token_embedding)  # (B, T, V) float32
        return self.softcap * ops.tanh(logits / self.softcap)

    def get_config(self):
        config = super().get_config()
        config.update(softcap=self.softcap)
        return config
