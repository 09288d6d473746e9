"""tfllm: build, train, align, evaluate and serve transformer language models on Keras 3 and
TensorFlow."""

__version__ = "0.1.0"
# The plugin API version: plugins declare the version they target (see docs/plugins.md).
API_VERSION = 1
