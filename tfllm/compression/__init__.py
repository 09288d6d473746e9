"""Smaller and faster models: int8 weight quantization and magnitude pruning."""
