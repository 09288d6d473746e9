"""tfllm-plugin-example: components the tfllm core does not ship, as a third-party package.

- `attention/linear`: causal or bidirectional linear attention (Katharopoulos et al. 2020);
- `positional/xpos`: rotary embeddings with an exponential decay (Sun et al. 2022);
- `norm/scalenorm`: one learned scale on the L2-normalized vector (Nguyen & Salazar 2019);
- `head/softcap_lm`: an LM head whose logits are soft-capped with tanh (Gemma 2).

tfllm imports this module through the `tfllm.plugins` entry point; the imports below run the
`@register` decorators. `conf/` holds one Hydra config per component, so after
`pip install tfllm-plugin-example`, `tfllm train attention=linear positional=xpos` just works.
"""

# The tfllm plugin API version these components are written against (docs/plugins.md).
TFLLM_API_VERSION = 1

from tfllm_plugin_example.linear_attention import LinearAttention  # noqa: E402
from tfllm_plugin_example.scale_norm import ScaleNorm  # noqa: E402
from tfllm_plugin_example.softcap_lm_head import SoftcapLMHead  # noqa: E402
from tfllm_plugin_example.xpos import XPosEncoding  # noqa: E402

__version__ = "0.1.0"
__all__ = ["LinearAttention", "ScaleNorm", "SoftcapLMHead", "XPosEncoding"]
