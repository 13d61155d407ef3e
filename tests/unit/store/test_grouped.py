"""Group commit on a real SecantusDB: jobs that start or finish together share one command, and each caller still
hears of its own job alone."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo.monitoring import CommandFailedEvent, CommandListener, CommandStartedEvent, CommandSucceededEvent

from engineroom.core.clock import utcnow
from engineroom.core.errors import InvalidTransition
from engineroom.core.ids import new_id
from engineroom.models.job import JobDocument, JobState, RunningAttempt, Usage
from engineroom.store.jobs import JobStore
from tests.unit.store.test_jobs import an_outcome, make_job


class Commands(CommandListener):
    """The commands a client sends, by name."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()

    def started(self, event: CommandStartedEvent) -> None:
        self.sent[event.command_name] += 1

    def succeeded(self, event: CommandSucceededEvent) -> None:
        """Counted when started."""

    def failed(self, event: CommandFailedEvent) -> None:
        """Counted when started."""


@pytest.fixture
async def counted(mongodb_url: str) -> AsyncIterator[tuple[JobStore, Commands]]:
    commands = Commands()
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(
        mongodb_url, tz_aware=True, event_listeners=[commands]
    )
    yield JobStore(client[f"grouped_{new_id()}"]), commands
    client.close()


async def running_jobs(jobs: JobStore, count: int) -> list[JobDocument]:
    stored = [make_job(state=JobState.RUNNING, worker_id="w1", attempts=1) for _ in range(count)]
    await jobs.insert_many(stored)
    return stored


async def complete(jobs: JobStore, job: JobDocument, outcome_of: JobDocument | None = None) -> None:
    await jobs.complete(
        job.id,
        attempt=RunningAttempt(worker_id="w1", attempts=1),
        result={"n": 1},
        usage=Usage(),
        finished_at=utcnow(),
        outcome=an_outcome(outcome_of or job),
    )


async def test_outcomes_of_jobs_finishing_together_go_in_one_update(counted: tuple[JobStore, Commands]) -> None:
    jobs, commands = counted
    finishing = await running_jobs(jobs, 5)
    commands.sent.clear()
    await asyncio.gather(*(complete(jobs, job) for job in finishing))
    assert commands.sent == {"update": 1}
    stored = await asyncio.gather(*(jobs.get(job.id) for job in finishing))
    assert [job.state if job else None for job in stored] == [JobState.COMPLETED] * 5
    assert commands.sent == {"update": 1, "find": 1}  # the five reads went together too


async def test_a_refused_outcome_in_a_group_fails_alone_and_the_others_land(
    counted: tuple[JobStore, Commands],
) -> None:
    jobs, commands = counted
    finishing = await running_jobs(jobs, 3)
    await jobs.cancel(finishing[1].id, expected=[JobState.RUNNING], detail="cancelled by alice")
    commands.sent.clear()
    answers = await asyncio.gather(*(complete(jobs, job) for job in finishing), return_exceptions=True)
    assert answers[0] is None and answers[2] is None
    assert isinstance(answers[1], InvalidTransition)
    assert commands.sent == {"update": 1, "find": 1}  # the read tells which statements matched
    states = [stored.state for stored in await asyncio.gather(*(jobs.get(job.id) for job in finishing)) if stored]
    assert states == [JobState.COMPLETED, JobState.CANCELLED, JobState.COMPLETED]


async def test_an_outcome_sent_again_after_it_landed_is_answered_as_written_and_another_is_refused(
    counted: tuple[JobStore, Commands],
) -> None:
    jobs, _ = counted
    [job] = await running_jobs(jobs, 1)
    outcome = an_outcome(job)

    async def write(event_id: str) -> None:
        await jobs.complete(
            job.id,
            attempt=RunningAttempt(worker_id="w1", attempts=1),
            result=1,
            usage=Usage(),
            finished_at=utcnow(),
            outcome=outcome.model_copy(update={"id": event_id}),
        )

    await write(outcome.id)
    await write(outcome.id)  # what a retry after a lost reply sends: the same write, so the same answer
    with pytest.raises(InvalidTransition):
        await write(new_id())  # any other outcome finds the job finished
