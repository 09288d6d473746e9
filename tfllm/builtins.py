"""Imports every built-in component, so registration never depends on import order."""

from tfllm.adapters import lora  # noqa: F401
from tfllm.components.attention import block_sparse, mha  # noqa: F401
from tfllm.components.ffn import mlp, moe, swiglu  # noqa: F401
from tfllm.components.heads import (  # noqa: F401
    classification,
    lm,
    scalar,
    span,
    token_classification,
)
from tfllm.components.norm import layernorm, rmsnorm  # noqa: F401
from tfllm.components.positional import (  # noqa: F401
    alibi,
    learned,
    none,
    relative,
    rope,
    sinusoidal,
)
from tfllm.components.safety import patterns  # noqa: F401
from tfllm.components.tokenizers import bpe, byte, char, sentencepiece, wordpiece  # noqa: F401
from tfllm.data import chat as chat_data  # noqa: F401
from tfllm.data import classification as classification_data  # noqa: F401
from tfllm.data import conll, preferences, prepared, prompts, squad, text  # noqa: F401
from tfllm.data import seq2seq as seq2seq_data  # noqa: F401
from tfllm.evaluation import safety_classifier  # noqa: F401
from tfllm.models import decoder, encoder, encoder_decoder  # noqa: F401
from tfllm.tasks import (  # noqa: F401
    causal_lm,
    classifier,
    dpo,
    extractive_qa,
    masked_lm,
    ppo,
    reward,
    sentence_embedding,
    seq2seq,
    span_corruption,
)
from tfllm.training import callbacks, optimizers, schedules  # noqa: F401
