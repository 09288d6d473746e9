"""Registered building blocks: tokenizers, positional encodings, attention, FFN, norms, heads."""
