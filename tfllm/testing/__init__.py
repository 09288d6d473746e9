"""The shared component test harness, public so plugin authors test exactly as built-ins are.

from tfllm.testing import check_decoder_properties, run_layer_test, run_tokenizer_test
"""

from tfllm.testing.harness import run_layer_test, run_tokenizer_test
from tfllm.testing.properties import check_decoder_properties

__all__ = ["check_decoder_properties", "run_layer_test", "run_tokenizer_test"]
