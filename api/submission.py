"""Accepting a job: validate it against its task, store it, put it on its engine's queue, announce it."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from engineroom.actors.registry import get_task
from engineroom.core.broker import Enqueuer
from engineroom.core.clock import utcnow
from engineroom.core.errors import BrokerUnavailable, EngineroomError
from engineroom.core.ids import new_id
from engineroom.models.event import Event, EventType, job_event
from engineroom.models.job import HistoryEntry, JobDocument, JobState, JobSubmit
from engineroom.models.principal import Principal
from engineroom.notifications.bus import EventBus
from engineroom.store.jobs import JobStore

logger = logging.getLogger(__name__)


class JobSubmitter:
    """Turns a validated ``JobSubmit`` into a stored, queued job (api → store + broker)."""

    def __init__(self, jobs: JobStore, enqueuer: Enqueuer, bus: EventBus) -> None:
        self.jobs = jobs
        self.enqueuer = enqueuer
        self.bus = bus
        # The bus blocks (pika); one thread keeps its per-thread connection alive and off the event loop.
        self._publisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engineroom-events")

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
        )

    async def submit(self, body: JobSubmit, who: Principal, idempotency_key: str | None = None) -> JobDocument:
        """Store and enqueue a job; a repeated idempotency key returns the first job instead.

        Raises:
          InvalidRequest: see ``build``.
          StoreUnavailable, BrokerUnavailable: nothing was accepted; the caller may retry.
        """
        job = self.build(body, who, idempotency_key)
        stored = await self.jobs.insert(job)
        if stored.id != job.id:
            return stored
        try:
            await self.enqueuer.enqueue(engine=job.engine, job_id=job.id, priority=job.priority)
        except BrokerUnavailable:
            await self.jobs.delete(job.id)  # not accepted: the client got a 503 and still holds the request
            raise
        await self.publish(job_event(job, EventType.JOB_QUEUED, {"priority": job.priority}))
        return job

    async def publish(self, event: Event) -> None:
        """Announce an event; a lost event is logged, never fails the request (the document is the truth)."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._publisher, self.bus.publish, event)
        except EngineroomError:
            logger.exception("event %s for job %s was not published", event.type, event.job_id)

    def close(self) -> None:
        self._publisher.shutdown(wait=True)
