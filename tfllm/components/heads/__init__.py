"""Task heads (registry kind `head`)."""
