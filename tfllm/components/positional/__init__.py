"""Positional encodings (registry kind `positional`)."""
