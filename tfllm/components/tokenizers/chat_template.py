"""Rendering a conversation with a checkpoint's chat template (`tfllm.chat_template`, which the
serving room shares): what turns messages into the text a tokenizer encodes."""

from __future__ import annotations

from tfllm.chat_template import render_template

__all__ = ["render_template"]
