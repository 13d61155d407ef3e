"""Backoff: full jitter under an exponential ceiling that stops at the cap."""

from __future__ import annotations

import random

from engineroom.core.backoff import compute_backoff_s


def test_the_ceiling_doubles_per_attempt_and_stops_at_the_cap() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(0, 2.0), (1, 4.0), (3, 16.0), (20, 3600.0), (10_000, 3600.0)]:
        samples = [compute_backoff_s(attempt, base_s=2.0, cap_s=3600.0, rng=rng) for _ in range(500)]
        assert all(0 <= sample <= ceiling for sample in samples)
        assert max(samples) > 0.9 * ceiling  # full jitter reaches the top of its range
        assert min(samples) < 0.1 * ceiling  # ... and the bottom


def test_a_pinned_random_source_gives_the_same_delays() -> None:
    first = [compute_backoff_s(n, base_s=2, cap_s=60, rng=random.Random(1)) for n in range(5)]
    again = [compute_backoff_s(n, base_s=2, cap_s=60, rng=random.Random(1)) for n in range(5)]
    assert first == again
