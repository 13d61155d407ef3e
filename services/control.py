"""Changing a job's course on a user's request: cancel (even while it runs) and retry."""

from __future__ import annotations

from engineroom.core.errors import InvalidTransition
from engineroom.core.metrics import count_finished
from engineroom.models.event import EventType, job_event
from engineroom.models.job import TERMINAL_STATES, JobDocument, JobState
from engineroom.models.principal import Principal
from engineroom.services.dispatch import Dispatcher
from engineroom.services.publisher import AsyncEventPublisher
from engineroom.store.jobs import JobStore

#: Every state a job can be cancelled from.
CANCELLABLE_STATES = frozenset(JobState) - TERMINAL_STATES
#: States a job can be retried from by hand.
RETRYABLE_STATES = frozenset({JobState.FAILED, JobState.CANCELLED})


class JobControl:
    def __init__(self, jobs: JobStore, dispatcher: Dispatcher, publisher: AsyncEventPublisher) -> None:
        self.jobs = jobs
        self.dispatcher = dispatcher
        self.publisher = publisher

    async def cancel(self, job_id: str, who: Principal) -> JobDocument:
        """Cancel an unfinished job. A running one is interrupted by its worker, which hears ``job.cancelled``.

        Raises:
          NotFound: not the caller's job.
          InvalidTransition: the job has already finished.
        """
        job = await self.jobs.get_visible(job_id, who)
        if job.state in TERMINAL_STATES:
            raise InvalidTransition(f"job {job_id} is {job.state}; only unfinished jobs can be cancelled")
        await self.jobs.cancel(job_id, expected=CANCELLABLE_STATES, detail=f"by {who.user_id}")
        cancelled = await self.jobs.get_visible(job_id, who)
        count_finished(cancelled.engine, cancelled.task, JobState.CANCELLED)
        await self.publisher.publish(job_event(cancelled, EventType.JOB_CANCELLED, {"previous_state": str(job.state)}))
        return cancelled

    async def retry(self, job_id: str, who: Principal) -> JobDocument:
        """Queue a failed or cancelled job again: same id, its history kept, a fresh retry budget.

        Raises:
          NotFound: not the caller's job.
          InvalidTransition: the job is not failed or cancelled.
        """
        job = await self.jobs.get_visible(job_id, who)
        if job.state not in RETRYABLE_STATES:
            raise InvalidTransition(f"job {job_id} is {job.state}; only failed or cancelled jobs can be retried")
        await self.jobs.retry(job, expected=RETRYABLE_STATES, detail=f"retried by {who.user_id}")
        queued = await self.jobs.get_visible(job_id, who)
        await self.publisher.publish(job_event(queued, EventType.JOB_QUEUED, {"priority": queued.priority}))
        await self.dispatcher.dispatch(queued)  # after the announcement, as for a submit: see announce_and_send
        return queued
