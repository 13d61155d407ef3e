"""``engineroom worker --autoscale``: a supervisor that starts and drains worker processes by backlog."""
