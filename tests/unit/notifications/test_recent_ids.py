"""Gateways drop repeats of an event (same id) that was published more than once."""

from __future__ import annotations

from engineroom.notifications.websocket import RecentIds


def test_a_repeated_id_is_recognised_until_it_falls_out_of_the_window() -> None:
    recent = RecentIds(size=2)
    assert [recent.seen(event_id) for event_id in ("a", "b", "a")] == [False, False, True]
    recent.seen("c")
    recent.seen("d")
    assert recent.seen("a") is False  # forgotten: only the last two ids are kept
