"""Imports every built-in component, so registration never depends on import order."""

from tfllm.components.attention import mha  # noqa: F401
from tfllm.components.ffn import mlp, swiglu  # noqa: F401
from tfllm.components.heads import classification, lm  # noqa: F401
from tfllm.components.norm import layernorm, rmsnorm  # noqa: F401
from tfllm.components.positional import alibi, learned, none, rope, sinusoidal  # noqa: F401
from tfllm.components.safety import classifier as classifier_filter  # noqa: F401
from tfllm.components.safety import patterns  # noqa: F401
from tfllm.components.tokenizers import bpe, byte, char, sentencepiece, wordpiece  # noqa: F401
from tfllm.data import classification as classification_data  # noqa: F401
from tfllm.data import text  # noqa: F401
from tfllm.models import decoder, encoder  # noqa: F401
from tfllm.tasks import causal_lm, classifier, masked_lm, sentence_embedding  # noqa: F401
from tfllm.training import callbacks, optimizers, schedules  # noqa: F401
