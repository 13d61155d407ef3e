"""Process-wide plumbing shared by every entry point: settings, errors, ids, clock, broker, tokens."""
