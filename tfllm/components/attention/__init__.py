"""Attention layers (registry kind `attention`)."""
