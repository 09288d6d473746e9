"""Parameter-efficient adapters (registry kind `adapter`)."""
