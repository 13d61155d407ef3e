"""Accepting a job: validate it against its task, store it, send it to its engine's queue, announce it."""

from __future__ import annotations

from engineroom.actors.registry import get_task
from engineroom.core.clock import utcnow
from engineroom.core.dispatch import Dispatcher
from engineroom.core.ids import new_id
from engineroom.models.event import EventType, job_event
from engineroom.models.job import HistoryEntry, JobDocument, JobState, JobSubmit
from engineroom.models.principal import Principal
from engineroom.notifications.publisher import AsyncEventPublisher
from engineroom.store.jobs import JobStore


class JobSubmitter:
    """Turns a validated ``JobSubmit`` into a stored, queued job (api → store + broker)."""

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
        return JobDocument(
            id=new_id(),
            tenant_id=who.tenant_id,
            user_id=who.user_id,
            engine=task.engine,
            task=task.full_name,
            payload=body.payload,
            priority=body.priority,
            state=JobState.QUEUED,
            max_retries=task.max_retries if body.max_retries is None else body.max_retries,
            timeout_s=task.timeout_s if body.timeout_s is None else body.timeout_s,
            created_at=now,
            queued_at=now,
            tags=body.tags,
            metadata=body.metadata,
            idempotency_key=idempotency_key or body.idempotency_key,
            history=[HistoryEntry(state=JobState.QUEUED, at=now, detail="submitted")],
            needs_dispatch=True,
        )

    async def submit(
        self, body: JobSubmit, who: Principal, idempotency_key: str | None = None
    ) -> tuple[JobDocument, bool]:
        """Store and send a job; returns it and whether it is new (False: an idempotency key's earlier job).

        Once MongoDB has the job it is accepted: if RabbitMQ is down, the scheduler sends it later (outbox).

        Raises:
          InvalidRequest: see ``build``.
          StoreUnavailable: nothing was accepted; the caller may retry.
        """
        job = self.build(body, who, idempotency_key)
        stored = await self.jobs.insert(job)
        if stored.id != job.id:
            return stored, False
        await self.dispatcher.dispatch(job)
        await self.publisher.publish(job_event(job, EventType.JOB_QUEUED, {"priority": job.priority}))
        return job, True
