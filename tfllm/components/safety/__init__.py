"""Safety filters (registry kind `safety_filter`): decide whether a generated text is flagged."""
