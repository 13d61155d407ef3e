"""When ``engineroom worker --autoscale`` adds or removes a worker process: pure, so tests inject the readings.

One step at a time, each after a window of its own: up when ready jobs per process stayed above the threshold
for ``sustain_s`` and the host has room (the workers' backpressure thresholds, judged by ``core/pressure.py``:
a process started on a host its workers pause on would only pause too); down when nothing was ready for
``cooldown_s``. A step restarts both windows, so the next step waits for fresh evidence, including the effect
of the process just added.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from engineroom.core.pressure import Limits, Readings, judge


@dataclass(frozen=True)
class Policy:
    """The bounds and thresholds one supervisor scales by."""

    min_processes: int
    max_processes: int
    #: Add a process when ready jobs per process stay above this.
    backlog_per_process: float
    sustain_s: float
    cooldown_s: float
    #: Host headroom: CPU and memory thresholds (RSS is per worker process and plays no part here).
    limits: Limits

    def __post_init__(self) -> None:
        if not 1 <= self.min_processes <= self.max_processes:
            raise ValueError(f"need 1 <= MIN <= MAX processes, got {self.min_processes}:{self.max_processes}")


@dataclass(frozen=True)
class Observation:
    """One check: when (monotonic seconds), how many processes take jobs, the ready backlog, the host."""

    at_s: float
    processes: int
    backlog: int
    host: Readings


@dataclass(frozen=True)
class Trend:
    """Since when the backlog has been high, or nothing has been ready; carried from one check to the next."""

    busy_since_s: float | None = None
    idle_since_s: float | None = None


class Action(StrEnum):
    #: Start one more process (or as many as reach ``min_processes``).
    UP = "up"
    #: Drain the newest process.
    DOWN = "down"
    #: Keep the count.
    HOLD = "hold"
    #: Keep the count although the backlog calls for more: at the maximum, or the host has no headroom.
    BLOCKED = "blocked"


@dataclass(frozen=True)
class Decision:
    action: Action
    #: The process count to have after this check.
    target: int
    reason: str
    trend: Trend


def decide(seen: Observation, trend: Trend, policy: Policy) -> Decision:
    """The next step for ``seen`` given the ``trend`` of earlier checks: never above ``max_processes`` or below
    ``min_processes``; up only after a sustained backlog with headroom; down only after an idle cooldown."""
    if seen.processes < policy.min_processes:
        reason = f"{seen.processes} process(es) running, below the minimum {policy.min_processes}"
        return Decision(Action.UP, policy.min_processes, reason, Trend())
    if seen.processes > policy.max_processes:
        reason = f"{seen.processes} process(es) running, above the maximum {policy.max_processes}"
        return Decision(Action.DOWN, seen.processes - 1, reason, Trend())
    per_process = seen.backlog / seen.processes
    if per_process > policy.backlog_per_process:
        return _when_busy(seen, trend, policy, per_process)
    if seen.backlog == 0:
        return _when_idle(seen, trend, policy)
    reason = f"backlog {per_process:.1f} per process <= {policy.backlog_per_process:g}"
    return Decision(Action.HOLD, seen.processes, reason, Trend())


def _when_busy(seen: Observation, trend: Trend, policy: Policy, per_process: float) -> Decision:
    since_s = seen.at_s if trend.busy_since_s is None else trend.busy_since_s
    kept = Trend(busy_since_s=since_s)
    lasted_s = seen.at_s - since_s
    backlog = f"backlog {per_process:.1f} per process > {policy.backlog_per_process:g} for {lasted_s:.0f} s"
    if lasted_s < policy.sustain_s:
        return Decision(Action.HOLD, seen.processes, f"{backlog}, not yet {policy.sustain_s:g} s", kept)
    if seen.processes >= policy.max_processes:
        return Decision(Action.BLOCKED, seen.processes, f"{backlog}, at the maximum {policy.max_processes}", kept)
    verdict = judge(seen.host, policy.limits)
    if verdict.pause:
        return Decision(Action.BLOCKED, seen.processes, f"{backlog}, no headroom: {'; '.join(verdict.reasons)}", kept)
    host = f"cpu {seen.host.cpu_percent:.0f}% mem {seen.host.memory_percent:.0f}%"
    return Decision(Action.UP, seen.processes + 1, f"{backlog}, {host}", Trend())


def _when_idle(seen: Observation, trend: Trend, policy: Policy) -> Decision:
    since_s = seen.at_s if trend.idle_since_s is None else trend.idle_since_s
    lasted_s = seen.at_s - since_s
    if seen.processes <= policy.min_processes or lasted_s < policy.cooldown_s:
        reason = f"no ready jobs for {lasted_s:.0f} s"
        return Decision(Action.HOLD, seen.processes, reason, Trend(idle_since_s=since_s))
    reason = f"no ready jobs for {lasted_s:.0f} s >= cooldown {policy.cooldown_s:g} s"
    return Decision(Action.DOWN, seen.processes - 1, reason, Trend())
