"""Tasks: a backbone plus a head, a loss and metrics (registry kind `task`)."""
