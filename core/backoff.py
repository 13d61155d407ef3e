"""Retry backoff: pure, so tests can pin the random source."""

from __future__ import annotations

import random


def compute_backoff_s(attempt: int, *, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before the next attempt after ``attempt`` failed ones: full jitter over
    ``min(base_s * 2**attempt, cap_s)`` (spreads a thundering herd of retries evenly, unlike dramatiq's
    ``compute_backoff`` which only jitters the top half)."""
    ceiling = min(cap_s, base_s * 2 ** min(attempt, 62))
    return (rng or random).uniform(0, ceiling)
