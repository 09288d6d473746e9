"""Normalization layers (registry kind `norm`)."""
