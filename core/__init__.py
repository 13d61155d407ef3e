"""Pure building blocks every layer may use: settings, errors, ids, clock, cron, durations, backoff, host pressure,
logs, shutdown. ``core/`` imports nothing else of the project (tests/test_layers.py)."""
