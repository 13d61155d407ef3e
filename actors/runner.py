"""``JobRunner``: a job's life on a worker — claim it, run its task, record the outcome, tell its watchers.

Runs on Dramatiq worker threads. MongoDB is reached through motor on the event loop thread that Dramatiq's
``AsyncIO`` middleware runs, so store/ stays one async module for the gateway and the workers alike.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Coroutine
from typing import Any, TypeVar

from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import Interrupt, TimeLimitExceeded
from motor.motor_asyncio import AsyncIOMotorClient
from pydantic_core import to_jsonable_python

from engineroom.actors.context import JobContext
from engineroom.actors.registry import Task, get_task
from engineroom.core.clock import utcnow
from engineroom.core.config import Settings
from engineroom.core.errors import EngineroomError, InvalidTransition, JobCancelled
from engineroom.models.event import EventType, job_event
from engineroom.models.job import JobDocument, JobError, JobState, Progress
from engineroom.notifications.bus import EventBus
from engineroom.store.client import connect
from engineroom.store.jobs import JobStore

logger = logging.getLogger(__name__)

T = TypeVar("T")


def describe_error(exc: BaseException) -> JobError:
    """The stored form of a task's failure."""
    if isinstance(exc, TimeLimitExceeded):
        return JobError(type="Timeout", message="the job ran past its time limit", transient=True)
    return JobError(
        type=type(exc).__name__,
        message=str(exc) or type(exc).__name__,
        traceback="".join(traceback.format_exception(exc)),
        transient=bool(getattr(exc, "transient", False)),
    )


class JobRunner:
    """Executes job messages; one per worker process, shared by its threads."""

    def __init__(self, settings: Settings, bus: EventBus) -> None:
        self.settings = settings
        self.bus = bus
        self._jobs: JobStore | None = None
        self._client: AsyncIOMotorClient[dict[str, Any]] | None = None

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        loop_thread = get_event_loop_thread()
        if loop_thread is None:
            coroutine.close()
            raise RuntimeError("the AsyncIO middleware is not running; build the broker with core.broker")
        return loop_thread.run_coroutine(coroutine)

    async def _store(self) -> JobStore:
        if self._jobs is None:  # created on the loop thread, where motor binds to the loop
            self._client = connect(self.settings)
            self._jobs = JobStore(self._client[self.settings.mongodb_db])
        return self._jobs

    async def _close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = self._jobs = None

    def close(self) -> None:
        """Close this runner's database client; call while the event loop thread still runs."""
        self._run(self._close())

    async def _get(self, job_id: str) -> JobDocument | None:
        return await (await self._store()).get(job_id)

    async def _transition(self, job_id: str, **kwargs: Any) -> None:
        await (await self._store()).transition(job_id, **kwargs)

    async def _set_progress(self, job_id: str, progress: Progress) -> bool:
        return await (await self._store()).set_progress(job_id, progress)

    def publish(self, job: JobDocument, event_type: EventType, data: dict[str, Any] | None = None) -> None:
        """Tell the job's watchers; a lost event is logged, never fatal (the document is the truth)."""
        try:
            self.bus.publish(job_event(job, event_type, data))
        except EngineroomError:
            logger.exception("event %s for job %s was not published", event_type, job.id)

    def run_job(self, job_id: str) -> None:
        """Run the job if it is still ``queued``; any other state means someone else owns it."""
        job = self._run(self._get(job_id))
        if job is None:
            logger.warning("job %s not found; dropping its message", job_id)
            return
        if job.state != JobState.QUEUED:
            logger.info("job %s is %s, not queued; not running it", job_id, job.state)
            return
        try:
            task = get_task(job.task)
        except EngineroomError as exc:
            self._finish(job, JobState.FAILED, {"error": describe_error(exc).model_dump()}, expected=JobState.QUEUED)
            return
        started_at = utcnow()
        try:
            self._run(
                self._transition(
                    job.id,
                    expected=[JobState.QUEUED],
                    to=JobState.RUNNING,
                    fields={"started_at": started_at},
                    increment_attempts=True,
                )
            )
        except InvalidTransition:
            logger.info("job %s was claimed or cancelled meanwhile", job_id)
            return
        job = job.model_copy(update={"state": JobState.RUNNING, "started_at": started_at, "attempts": job.attempts + 1})
        self.publish(job, EventType.JOB_STARTED, {"attempt": job.attempts})
        self._execute(job, task)

    def _execute(self, job: JobDocument, task: Task) -> None:
        ctx = JobContext(job, self)
        try:
            result = to_jsonable_python(task(ctx, **task.validate_payload(job.payload)))
        except (Exception, Interrupt) as exc:
            if isinstance(exc, JobCancelled):
                raise  # cancellation is recorded by whoever cancelled
            logger.info("job %s failed: %r", job.id, exc)
            fields = {"error": describe_error(exc).model_dump(), "usage": ctx.usage.model_dump()}
            self._finish(job, JobState.FAILED, fields)
            return
        fields = {
            "result": result,
            "usage": ctx.usage.model_dump(),
            "progress": {"percent": 100.0, "message": "done", "details": {}},
        }
        self._finish(job, JobState.COMPLETED, fields)

    def _finish(
        self, job: JobDocument, to: JobState, fields: dict[str, Any], expected: JobState = JobState.RUNNING
    ) -> None:
        fields = {**fields, "finished_at": utcnow()}
        try:
            self._run(self._transition(job.id, expected=[expected], to=to, fields=fields))
        except InvalidTransition:
            logger.info("job %s left %s before it could be marked %s", job.id, expected, to)
            return
        finished = job.model_copy(update={"state": to})
        if to == JobState.COMPLETED:
            self.publish(finished, EventType.JOB_COMPLETED, {"result": fields["result"]})
        else:
            self.publish(finished, EventType.JOB_FAILED, {"error": fields["error"]})

    # JobReporter, for JobContext:
    def report_progress(self, job: JobDocument, progress: Progress) -> None:
        if self._run(self._set_progress(job.id, progress)):
            self.publish(job, EventType.JOB_PROGRESS, progress.model_dump())

    def is_cancelled(self, job: JobDocument) -> bool:
        current = self._run(self._get(job.id))
        return current is None or current.state == JobState.CANCELLED
