"""Blocks and backbones assembled from registered components."""
