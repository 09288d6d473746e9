"""Feed-forward blocks (registry kind `ffn`)."""
