"""Pure logic of dependencies: given the states of a job's dependencies and its condition, may it start now,
must it wait, or can its condition no longer hold (then it is skipped: cancelled with the reason)?"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from engineroom.models.job import TERMINAL_STATES, JobDocument, JobState, StartCondition


class Readiness(StrEnum):
    WAIT = "wait"
    READY = "ready"
    SKIP = "skip"


@dataclass(frozen=True)
class Verdict:
    readiness: Readiness
    reason: str | None = None


def judge(condition: StartCondition, dependencies: list[JobDocument], expected_count: int) -> Verdict:
    """``success``: every dependency completed. ``completion``: every one finished, whatever the outcome.
    ``failure``: every one finished and at least one failed (an error handler)."""
    if len(dependencies) < expected_count:
        return Verdict(Readiness.SKIP, "a dependency no longer exists")
    unfinished = [job for job in dependencies if job.state not in TERMINAL_STATES]
    if condition == "success":
        broken = [job for job in dependencies if job.state in (JobState.FAILED, JobState.CANCELLED)]
        if broken:
            return Verdict(Readiness.SKIP, f"skipped: dependency {_name(broken[0])} {broken[0].state}")
        return Verdict(Readiness.WAIT if unfinished else Readiness.READY)
    if unfinished:
        return Verdict(Readiness.WAIT)
    if condition == "failure" and not any(job.state == JobState.FAILED for job in dependencies):
        return Verdict(Readiness.SKIP, "skipped: no dependency failed")
    return Verdict(Readiness.READY)


def inputs_of(dependencies: list[JobDocument]) -> dict[str, object]:
    """What the task receives as ``ctx.inputs``: each dependency's result by step id (or job id), and its error
    if it failed."""
    return {
        (job.step_id or job.id): job.result if job.state == JobState.COMPLETED else {"error": job.error}
        for job in dependencies
    }


def _name(job: JobDocument) -> str:
    return f"step {job.step_id!r}" if job.step_id else f"job {job.id}"
