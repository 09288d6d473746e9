"""Tokenizers (registry kind `tokenizer`). Each runs as TensorFlow ops inside a graph."""
