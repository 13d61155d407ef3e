"""Getting events to people: the notifier, the WebSocket fan-out, email and webhooks.

A layer above ``services/`` and below the edges that host it: the gateway serves the WebSocket hub, the scheduler
process runs the notifier, the workers' delivery actors send the email and webhooks. The events exchange itself is
``messaging/bus.py``.
"""
