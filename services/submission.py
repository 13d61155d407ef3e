"""Accepting jobs: validate each against its task, store it, send it to its engine's queue (or let it wait for
its time or its dependencies), announce it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from engineroom.core.clock import utcnow
from engineroom.core.errors import InvalidRequest
from engineroom.core.ids import new_id
from engineroom.core.metrics import count_submitted
from engineroom.models.event import Event, EventType, job_event
from engineroom.models.job import HistoryEntry, JobDocument, JobState, JobSubmit
from engineroom.models.principal import Principal
from engineroom.services.dispatch import Dispatcher
from engineroom.services.publisher import AsyncEventPublisher
from engineroom.services.registry import get_task
from engineroom.store.jobs import JobStore

#: The event that announces a new job, by the state it starts in.
ANNOUNCEMENTS = {
    JobState.QUEUED: EventType.JOB_QUEUED,
    JobState.SCHEDULED: EventType.JOB_SCHEDULED,
    JobState.PENDING: EventType.JOB_PENDING,
}


def _start(body: JobSubmit, now: datetime) -> tuple[JobState, datetime | None, str]:
    """The state a new job starts in, when it is due, and its first history line."""
    if body.depends_on:
        return JobState.PENDING, None, f"waiting for {len(body.depends_on)} job(s)"
    due = body.scheduled_at if body.delay_s is None else now + timedelta(seconds=body.delay_s)
    if due is not None and due > now:
        return JobState.SCHEDULED, due, f"due at {due.isoformat()}"
    return JobState.QUEUED, None, "submitted"


class JobSubmitter:
    """Turns validated ``JobSubmit`` bodies into stored jobs (api → store + broker)."""

    def __init__(self, jobs: JobStore, dispatcher: Dispatcher, publisher: AsyncEventPublisher) -> None:
        self.jobs = jobs
        self.dispatcher = dispatcher
        self.publisher = publisher

    def build(self, body: JobSubmit, who: Principal, idempotency_key: str | None = None) -> JobDocument:
        """The job document for a submit, checked against the task's payload model.

        Raises:
          InvalidRequest: unknown task or a payload that does not fit it.
        """
        task = get_task(body.task)
        task.validate_payload(body.payload)
        now = utcnow()
        state, due, detail = _start(body, now)
        return JobDocument(
            id=new_id(),
            tenant_id=who.tenant_id,
            user_id=who.user_id,
            engine=task.engine,
            task=task.full_name,
            payload=body.payload,
            priority=body.priority,
            state=state,
            max_retries=task.max_retries if body.max_retries is None else body.max_retries,
            timeout_s=task.timeout_s if body.timeout_s is None else body.timeout_s,
            scheduled_at=due,
            created_at=now,
            queued_at=now if state == JobState.QUEUED else None,
            tags=body.tags,
            metadata=body.metadata,
            idempotency_key=idempotency_key or body.idempotency_key,
            depends_on=body.depends_on,
            history=[HistoryEntry(state=state, at=now, detail=detail)],
        ).with_outbox_flag()

    async def submit(
        self, body: JobSubmit, who: Principal, idempotency_key: str | None = None
    ) -> tuple[JobDocument, bool]:
        """Store and send a job; returns it and whether it is new (False: an idempotency key's earlier job).

        Once MongoDB has the job it is accepted: if RabbitMQ is down, the scheduler sends it later (outbox).

        Raises:
          InvalidRequest: see ``build``; or a dependency that is not one of the caller's jobs.
          StoreUnavailable: nothing was accepted; the caller may retry.
        """
        job = self.build(body, who, idempotency_key)
        await self._check_dependencies(job, who)
        stored = await self.jobs.insert(job)
        if stored.id != job.id:
            return stored, False
        await self.announce_and_send([job])
        return job, True

    async def submit_many(self, bodies: list[JobSubmit], who: Principal) -> list[JobDocument]:
        """Store many jobs with one write, then send the queued ones. All or nothing on validation.

        Raises:
          InvalidRequest: a job is invalid (the message names its index) or carries an idempotency key.
        """
        jobs = []
        for index, body in enumerate(bodies):
            if body.idempotency_key is not None:
                raise InvalidRequest(f"jobs[{index}]: idempotency keys are for single submits (POST /jobs)")
            try:
                job = self.build(body, who)
                await self._check_dependencies(job, who)
            except InvalidRequest as exc:
                raise InvalidRequest(f"jobs[{index}]: {exc.detail}") from None
            jobs.append(job)
        jobs, batch = await self.dispatcher.hold(jobs)
        await self.jobs.insert_many(jobs)
        await self.announce_and_send(jobs, batch=batch)
        return jobs

    async def _check_dependencies(self, job: JobDocument, who: Principal) -> None:
        if job.depends_on:
            missing = await self.jobs.missing_visible(job.depends_on, who)
            if missing:
                raise InvalidRequest(f"depends_on names jobs that are not yours or do not exist: {', '.join(missing)}")

    async def announce_and_send(self, jobs: list[JobDocument], *, batch: str | None = None) -> None:
        """Announce every job (each counts as submitted), then send the queued ones to their engines (``batch``: the
        token of the outbox record they were stored under, ``Dispatcher.hold``).

        Announced first: a worker may take a message at once and announce ``job.started``; sent after, the job's
        own ``job.queued`` could reach sockets (and the replay log) behind it. The job is stored, so announcing it
        before its message is sent promises nothing the outbox does not keep.
        """
        for job in jobs:
            count_submitted(job.engine, job.task)
        await self.publisher.publish_many([self._announcement(job) for job in jobs])
        queued = [job for job in jobs if job.state == JobState.QUEUED]
        if queued:
            await self.dispatcher.dispatch_many(queued, batch=batch)

    @staticmethod
    def _announcement(job: JobDocument) -> Event:
        data: dict[str, Any] = {"priority": job.priority}
        if job.scheduled_at is not None:
            data["scheduled_at"] = job.scheduled_at.isoformat()
        return job_event(job, ANNOUNCEMENTS[job.state], data)
