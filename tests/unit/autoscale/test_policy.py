"""Scaling decisions from injected backlogs, host readings and times."""

from __future__ import annotations

import pytest

from engineroom.autoscale.policy import Action, Decision, Observation, Policy, Trend, decide
from engineroom.core.pressure import Limits, Readings

CALM = Readings(cpu_percent=40, memory_percent=30, rss_mb=50)
BUSY_HOST = Readings(cpu_percent=95, memory_percent=30, rss_mb=50)
POLICY = Policy(
    min_processes=1,
    max_processes=3,
    backlog_per_process=4,
    sustain_s=3,
    cooldown_s=10,
    limits=Limits(max_cpu_percent=80, max_memory_percent=90),
)


def run(checks: list[tuple[float, int, int]], host: Readings = CALM, policy: Policy = POLICY) -> list[Decision]:
    """Decide for each ``(time, processes, backlog)`` in turn, carrying the trend as the supervisor does."""
    trend, decisions = Trend(), []
    for at_s, processes, backlog in checks:
        decision = decide(Observation(at_s, processes, backlog, host), trend, policy)
        trend = decision.trend
        decisions.append(decision)
    return decisions


def test_a_sustained_backlog_with_headroom_adds_one_process() -> None:
    *waiting, up = run([(0, 1, 14), (1, 1, 14), (2, 1, 14), (3, 1, 14)])
    assert [decision.action for decision in waiting] == [Action.HOLD] * 3
    assert (up.action, up.target) == (Action.UP, 2)
    assert up.reason == "backlog 14.0 per process > 4 for 3 s, cpu 40% mem 30%"


def test_a_backlog_that_dips_restarts_the_sustain_window() -> None:
    decisions = run([(0, 1, 14), (2, 1, 3), (3, 1, 14), (5, 1, 14), (6, 1, 14)])
    assert [decision.action for decision in decisions] == [Action.HOLD] * 4 + [Action.UP]


def test_the_backlog_counts_per_process() -> None:
    assert run([(0, 2, 8), (5, 2, 8)])[-1].action == Action.HOLD  # 4 per process is not above 4
    assert run([(0, 2, 9), (5, 2, 9)])[-1].action == Action.UP


def test_a_step_up_needs_a_fresh_window_before_the_next() -> None:
    decisions = run([(0, 1, 20), (3, 1, 20), (4, 2, 20), (6, 2, 20), (7, 2, 20)])
    assert [(decision.action, decision.target) for decision in decisions] == [
        (Action.HOLD, 1),
        (Action.UP, 2),
        (Action.HOLD, 2),
        (Action.HOLD, 2),
        (Action.UP, 3),
    ]


def test_never_above_the_maximum() -> None:
    blocked = run([(0, 3, 100), (60, 3, 100)])[-1]
    assert (blocked.action, blocked.target) == (Action.BLOCKED, 3)
    assert "at the maximum 3" in blocked.reason


def test_no_headroom_blocks_a_step_up_with_the_thresholds_reason() -> None:
    blocked = run([(0, 1, 100), (5, 1, 100)], host=BUSY_HOST)[-1]
    assert (blocked.action, blocked.target) == (Action.BLOCKED, 1)
    assert blocked.reason.endswith("no headroom: host CPU 95% > 80%")


def test_without_thresholds_any_host_has_headroom() -> None:
    unlimited = Policy(1, 3, 4, 3, 10, Limits())
    assert run([(0, 1, 100), (5, 1, 100)], host=BUSY_HOST, policy=unlimited)[-1].action == Action.UP


def test_an_idle_cooldown_removes_one_process() -> None:
    *waiting, down = run([(0, 3, 0), (5, 3, 0), (10, 3, 0)])
    assert [decision.action for decision in waiting] == [Action.HOLD] * 2
    assert (down.action, down.target) == (Action.DOWN, 2)
    assert down.reason == "no ready jobs for 10 s >= cooldown 10 s"


def test_work_during_the_cooldown_restarts_it() -> None:
    decisions = run([(0, 2, 0), (9, 2, 1), (10, 2, 0), (19, 2, 0), (20, 2, 0)])
    assert [decision.action for decision in decisions] == [Action.HOLD] * 4 + [Action.DOWN]


def test_each_step_down_waits_a_cooldown_of_its_own() -> None:
    decisions = run([(0, 3, 0), (10, 3, 0), (11, 2, 0), (20, 2, 0), (21, 2, 0)])
    assert [decision.action for decision in decisions] == [
        Action.HOLD,
        Action.DOWN,
        Action.HOLD,
        Action.HOLD,
        Action.DOWN,
    ]


def test_never_below_the_minimum() -> None:
    decisions = run([(0, 1, 0), (100, 1, 0), (1000, 1, 0)])
    assert all((decision.action, decision.target) == (Action.HOLD, 1) for decision in decisions)


def test_below_the_minimum_it_starts_up_to_it_at_once() -> None:
    policy = Policy(2, 4, 4, 3, 10, Limits())
    decision = run([(0, 0, 0)], policy=policy)[0]
    assert (decision.action, decision.target) == (Action.UP, 2)
    assert decision.reason == "0 process(es) running, below the minimum 2"


@pytest.mark.parametrize(("low", "high"), [(0, 2), (3, 2)])
def test_bounds_must_be_one_or_more_and_ordered(low: int, high: int) -> None:
    with pytest.raises(ValueError, match="MIN <= MAX"):
        Policy(low, high, 4, 3, 10, Limits())
