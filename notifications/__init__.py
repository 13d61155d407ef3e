"""Getting events to people: the events exchange, WebSocket fan-out (and later email and webhooks)."""
