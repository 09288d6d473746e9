"""The shared component test harness, public so plugin authors test exactly as built-ins are.

from tfllm.testing import run_layer_test, run_tokenizer_test
"""

from tfllm.testing.harness import run_layer_test, run_tokenizer_test

__all__ = ["run_layer_test", "run_tokenizer_test"]
