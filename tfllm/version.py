"""tfllm's release and the plugin API version it speaks (a leaf: imports nothing)."""

__version__ = "0.1.0"
# The plugin API version: plugins declare the version they target (see docs/plugins.md).
API_VERSION = 1
