"""``JobRunner``: a job's life on a worker — claim it, run its task, record the outcome, tell its watchers.

Runs on Dramatiq worker threads. MongoDB is reached through motor on the event loop thread that Dramatiq's
``AsyncIO`` middleware runs, so store/ stays one async module for the gateway and the workers alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from dramatiq import Broker
from dramatiq.middleware import CurrentMessage, Interrupt
from pydantic_core import to_jsonable_python

from engineroom.actors.admission import ADMISSION_OPTION, ADMITTED_AT_OPTION, Admission, HeldSlots, SlotGate
from engineroom.actors.failures import describe_error
from engineroom.actors.heartbeat import Heartbeat
from engineroom.actors.loop_stores import LoopStores, private_loop_thread
from engineroom.actors.progress import ProgressCoalescer
from engineroom.actors.results import storable_result
from engineroom.actors.running import RunningJobs
from engineroom.actors.start_write import DeferredStart, StartWrite
from engineroom.artifacts.base import ArtifactStore
from engineroom.artifacts.factory import build_artifact_store
from engineroom.core.backoff import compute_backoff_s
from engineroom.core.clock import utcnow
from engineroom.core.config import Settings
from engineroom.core.errors import EngineroomError, InvalidRequest, InvalidTransition, JobCancelled
from engineroom.core.idle import quiet_dead_connections_at_shutdown
from engineroom.core.ids import process_identity
from engineroom.core.logs import job_log_context
from engineroom.core.metrics import count_finished
from engineroom.messaging.bus import EventBus, Subscription
from engineroom.models.event import Event, EventType, job_event
from engineroom.models.job import (
    AttemptState,
    JobDocument,
    JobError,
    JobStart,
    JobState,
    Progress,
    RunningAttempt,
    Usage,
)
from engineroom.models.queue import QueueDocument
from engineroom.services.context import JobContext
from engineroom.services.publisher import publish_or_log
from engineroom.services.registry import Task, get_task
from engineroom.services.task_artifacts import TaskArtifacts
from engineroom.store.client import Database
from engineroom.store.events import EventStore
from engineroom.store.jobs import JobStore
from engineroom.store.queues import QueueStore
from engineroom.store.workers import WorkerStore

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds a job's start or progress event waits to be recorded with the next one (a short job's start, progress
#: and outcome then cost one write): the latency a watcher sees added to them, at most. The start of a job that runs
#: alone in its process does not wait: see ``_start``.
EVENT_LINGER_S = 0.005
#: Seconds lingering event records may wait further while a job's outcome is written (its outcome event, recorded
#: next, takes them along; this bounds the wait if it never comes).
OUTCOME_WRITE_WAIT_S = 0.05
#: Seconds between two database checks of ``ctx.raise_if_cancelled()`` for one job (the cancel signal itself
#: arrives over RabbitMQ at once; the check covers a signal that was lost).
CANCEL_POLL_INTERVAL_S = 1.0


def _outcome_event(job: JobDocument) -> Event:
    """``job.completed`` with the result, or ``job.failed`` with the error, of a finished job."""
    if job.state == JobState.COMPLETED:
        return job_event(job, EventType.JOB_COMPLETED, {"result": job.result})
    return job_event(job, EventType.JOB_FAILED, {"error": to_jsonable_python(job.error)})


def _is_redelivery() -> bool:
    """Whether RabbitMQ delivered the message being processed before (its consumer died holding it)."""
    message = CurrentMessage.get_current_message()
    return bool(getattr(message, "redelivered", False))


def _gate_decision() -> tuple[Admission | None, datetime | None]:
    """What the gate decided for the message being processed, and when it took the job's slot; (None, None) for a
    call that came by no gated consumer."""
    message = CurrentMessage.get_current_message()
    options = message.options if message is not None else {}
    decided, admitted_at = options.get(ADMISSION_OPTION), options.get(ADMITTED_AT_OPTION)
    return (
        Admission(decided) if decided is not None else None,
        datetime.fromisoformat(admitted_at) if isinstance(admitted_at, str) else None,
    )


@dataclass(frozen=True)
class Attempt:
    """One run of a job on this worker: the job as it runs, what its start write records, and that write's timer."""

    job: JobDocument
    claim: JobStart
    start: DeferredStart


@dataclass(frozen=True)
class WorkerStores:
    jobs: JobStore
    queues: QueueStore
    events: EventStore
    workers: WorkerStore
    artifacts: ArtifactStore

    @classmethod
    def of(cls, db: Database, settings: Settings) -> WorkerStores:
        return cls(
            JobStore(db),
            QueueStore(db, rate_window_s=settings.rate_window_s),
            EventStore(db, ttl_s=settings.events_ttl_s),
            WorkerStore(db, stale_after_s=settings.job_lease_s),
            build_artifact_store(settings, db),
        )


class JobRunner:
    """Executes job messages; one per worker process, shared by its threads."""

    def __init__(self, settings: Settings, bus: EventBus, broker: Broker) -> None:
        self.settings = settings
        self.bus = bus
        self.broker = broker
        self.worker_id = process_identity()
        self.running = RunningJobs()
        self.progress = ProgressCoalescer()
        self._stores = LoopStores(settings, lambda db: WorkerStores.of(db, settings))
        #: The heartbeat's own loop and client (built in ``start``): renewals must not queue behind the worker
        #: threads' database calls on the shared loop, or a busy worker's leases lapse and its jobs run twice.
        self._beat_stores: LoopStores[WorkerStores] | None = None
        #: The engine slots this process holds, by job (taken by the gate).
        self.slots = HeldSlots()
        #: One thread publishes every event this process records, so they leave in the order they were given.
        self._publishing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engineroom-publish")
        self._gate = self._build_gate()
        self._heartbeat: Heartbeat | None = None
        #: What each heartbeat does: renew leases, then whatever ``on_heartbeat`` added (the presence report).
        self._beats: list[Callable[[], None]] = [self.renew_leases]
        self._cancel_subscription: Subscription | None = None
        self._last_cancel_poll: dict[str, float] = {}

    # -- lifecycle (driven by Dramatiq middleware in actors/engines.py) --

    def start(self) -> None:
        """Begin renewing leases and listening for cancellations."""
        self._call(lambda stores: stores.queues.ensure_defaults())
        beat_loop = private_loop_thread("engineroom-heartbeat-loop")
        self._beat_stores = LoopStores(self.settings, lambda db: WorkerStores.of(db, self.settings), beat_loop)
        self._heartbeat = Heartbeat(self._beat, self.settings.job_lease_s / 3)
        self._heartbeat.start()
        self._cancel_subscription = self.bus.subscribe(self._on_cancel_event, routing_keys=[EventType.JOB_CANCELLED])

    def close(self) -> None:
        """Stop the heartbeat and listener and close the database client; the event loop must still run."""
        quiet_dead_connections_at_shutdown()  # Dramatiq closes the broker's connections next
        if self._cancel_subscription is not None:
            self._cancel_subscription.close()
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self._beat_stores is not None:
            self._beat_stores.close_and_stop()
        self._publishing.shutdown(wait=True)  # events given before the stop still go out
        self._stores.close()

    def stop_waiting_after(self, seconds: float) -> None:
        """The worker is stopping: database calls of this runner and its heartbeat, waiting or new, give up
        ``seconds`` from now."""
        for stores in (self._stores, self._beat_stores):
            if stores is not None:
                stores.stop_waiting_after(seconds)

    def on_heartbeat(self, beat: Callable[[], None]) -> None:
        """Also call ``beat`` on every heartbeat (from the heartbeat thread), after the leases are renewed."""
        self._beats.append(beat)

    def _beat(self) -> None:
        for beat in self._beats:
            try:
                beat()
            except Exception:  # a loop boundary: one failing beat must not starve the others
                logger.exception("heartbeat step %s failed", getattr(beat, "__qualname__", beat))

    # -- database access, through the AsyncIO middleware's loop --

    def _call(self, operation: Callable[[WorkerStores], Awaitable[T]]) -> T:
        return self._stores.call(operation)

    def call_stores(self, operation: Callable[[WorkerStores], Awaitable[T]]) -> T:
        """Run ``operation`` on this process's stores (on the ``AsyncIO`` loop) and wait for its result."""
        return self._stores.call(operation)

    def call_heartbeat_stores(self, operation: Callable[[WorkerStores], Awaitable[T]]) -> T:
        """Run ``operation`` on the heartbeat's own stores (its own loop and client); before ``start``, on the
        shared ones."""
        return (self._beat_stores or self._stores).call(operation)

    def renew_leases(self) -> None:
        """Extend the job and slot leases of every job this process runs (on the heartbeat's own connection)."""
        now = utcnow()
        until = now + timedelta(seconds=self.settings.job_lease_s)
        running = self.running.ids()
        held, slots_until = self.slots.ids(), now + timedelta(seconds=self.settings.slot_lease_s)

        async def renew(stores: WorkerStores) -> None:  # both at once: a beat costs one round trip's time
            await asyncio.gather(
                stores.jobs.renew_leases(running, self.worker_id, until),
                stores.queues.renew(held, self.worker_id, slots_until),
            )

        self.call_heartbeat_stores(renew)

    def held_job_ids(self) -> list[str]:
        """The jobs this process answers for: running, admitted (their slot taken) and about to run, or being
        admitted."""
        return sorted({*self.running.ids(), *self.slots.listed()})

    # -- a job's life --

    def publish(
        self,
        job: JobDocument,
        event_type: EventType,
        data: dict[str, Any] | None = None,
        *,
        wait: bool = True,
        linger_s: float = EVENT_LINGER_S,
    ) -> None:
        """Tell the job's watchers; without ``wait``, the event is recorded and published behind the calling thread's
        back, its record waiting up to ``linger_s`` for company (see ``_publish_event``)."""
        self._publish_event(job_event(job, event_type, data), wait=wait, linger_s=linger_s)

    def _publish_event(self, event: Event, *, wait: bool = True, linger_s: float = EVENT_LINGER_S) -> None:
        """Record the event for replay, then publish it. A lost event is logged, never fatal: the document is the
        truth.

        Every event goes the same way, in the order it was given: recorded on the loop (``EventStore.record``
        writes the events of all threads that wait together with one ``insert_many``), then published from one
        publishing thread. A job's start and progress do not wait for it (``wait=False``): the task runs on, and
        their records join the next group write; its outcome waits, so it is out before the message is acked, and
        so is everything announced before it.
        """
        if wait:
            self._call(lambda stores: self._record_then_publish(stores, event))
        else:
            self._stores.submit(lambda stores: self._record_then_publish(stores, event, linger_s=linger_s))

    async def _record_then_publish(self, stores: WorkerStores, event: Event, *, linger_s: float = 0.0) -> None:
        try:
            await stores.events.record(event, linger_s=linger_s)
        except EngineroomError:
            logger.exception("event %s for job %s was not recorded for replay", event.type, event.job_id)
        await asyncio.get_running_loop().run_in_executor(self._publishing, publish_or_log, self.bus, event)

    def run_job(self, job_id: str) -> None:
        """Run the job if it is still ``queued``; any other state means someone else owns it. The slot taken for
        it (by the gate, ``actors/admission.py``) is freed whatever happens."""
        admission, admitted_at = _gate_decision()
        if admission is Admission.DUPLICATE:
            logger.info("job %s holds a slot elsewhere already; dropping this second message", job_id)
            return
        try:
            job = self._call(lambda stores: stores.jobs.get(job_id))
            if job is None:
                logger.warning("job %s not found; dropping its message", job_id)
                return
            if job.state != JobState.QUEUED:
                logger.info("job %s is %s, not queued; not running it", job_id, job.state)
                if job.state in (JobState.COMPLETED, JobState.FAILED) and _is_redelivery():
                    # The worker that finished it may have died between storing the outcome and announcing it:
                    # announce it again (at least once; a watcher may hear it twice, never not at all).
                    self._announce_outcome(job)
                return
            with job_log_context(job.id, job.engine, job.task, job.tenant_id):
                self._run_queued(job, admission, admitted_at)
        finally:
            self._free_slot(job_id)

    def _run_queued(self, job: JobDocument, admission: Admission | None, admitted_at: datetime | None) -> None:
        try:
            task = get_task(job.task)
        except InvalidRequest as exc:
            self._finish(job, None, error=describe_error(exc, None))
            return
        if admission is None:  # a direct call, by no gated consumer: one try for a slot
            admitted_at = self._gate.take(job.engine, job.id, job.tenant_id)
        if admission is Admission.PARK or admitted_at is None:
            self._park(job)
            return
        self._start(job, task, admitted_at)

    def _free_slot(self, job_id: str) -> None:
        """Hand the job's slot over to a consumer here waiting for one (``actors/admission.py``), or free it."""
        engine = self.slots.engine_of(job_id)
        if engine is None or self.slots.offer(job_id):
            return
        self._gate.release(engine, job_id)

    def _park(self, job: JobDocument) -> None:
        """Its tenant is at its cap: keep the job queued in MongoDB and let the message go, so the engine's line
        moves on for other tenants; the scheduler sends the job again when its tenant has room."""
        if self._call(lambda stores: stores.jobs.park(job.id)):
            logger.debug("job %s waits for a slot of %s", job.id, job.engine)

    # -- admission (actors/admission.py) --

    def gate(self) -> SlotGate:
        """The admission gate of this process's engine consumers, on its stores."""
        return self._gate

    def _build_gate(self) -> SlotGate:
        def try_acquire(
            engine: str, job_id: str, tenant_id: str, now: datetime, until: datetime, replacing: str | None
        ) -> bool:
            return self._call(
                lambda stores: stores.queues.try_acquire(
                    engine,
                    job_id=job_id,
                    tenant_id=tenant_id,
                    worker_id=self.worker_id,
                    until=until,
                    now=now,
                    replacing=replacing,
                )
            )

        def release(engine: str, job_id: str) -> None:
            self._call(lambda stores: stores.queues.release(engine, job_id, self.worker_id))

        def read_queue(engine: str) -> QueueDocument:
            return self._call(lambda stores: stores.queues.get(engine))

        return SlotGate(self.settings, self.slots, try_acquire, release, read_queue)

    def _start(self, job: JobDocument, task: Task, started_at: datetime) -> None:
        """Announce the start at once and run the task; the start is written later, or with the outcome."""
        now = utcnow()
        claim = JobStart(
            worker_id=self.worker_id,
            started_at=started_at,
            # From the run's own start: the heartbeat renews the jobs that run, not those admitted and waiting.
            lease_until=now + timedelta(seconds=self.settings.job_lease_s),
            detail=f"attempt {job.attempts + 1} on {self.worker_id}",
        )
        claimed = claim.applied_to(job)
        attempt = Attempt(claimed, claim, DeferredStart(lambda: self._write_start(job.id, claim)))
        if _is_redelivery():
            if attempt.start.write_now() is StartWrite.REFUSED:
                return
        else:
            attempt.start.begin()
        # Beside other running jobs, the start's record waits a moment for their events (or for this job's own
        # outcome, if it is short) to share a write. A job alone in its process has no company coming but its own
        # outcome: its start is recorded and announced at once, so that the watcher of an idle engine sees it start.
        linger_s = EVENT_LINGER_S if self.slots.listed() - {job.id} else 0.0
        self.publish(claimed, EventType.JOB_STARTED, {"attempt": claimed.attempts}, wait=False, linger_s=linger_s)
        try:
            self._execute(attempt, task)
        finally:
            attempt.start.settle()  # a cancelled job's timer must not write its start afterwards

    def _write_start(self, job_id: str, claim: JobStart) -> bool:
        try:
            self._call(lambda stores: stores.jobs.mark_running(job_id, claim))
        except InvalidTransition:
            logger.info("job %s was cancelled before its start was written", job_id)
            return False
        return True

    def _execute(self, attempt: Attempt, task: Task) -> None:
        job = attempt.job
        ctx = JobContext(job, self, inputs=job.inputs, artifacts=TaskArtifacts(self, job))
        self.running.enter(job.id)
        # The job was just read as queued: no need to poll for cancellation or write progress at once.
        self._last_cancel_poll[job.id] = time.monotonic()
        self.progress.start(job.id)
        try:
            result = storable_result(
                task(ctx, **task.validate_payload(job.payload)), max_bytes=self.settings.max_result_bytes
            )
        except JobCancelled:
            logger.info("job %s stopped: it was cancelled", job.id)  # whoever cancelled recorded it
            self.progress.pop_latest(job.id)
            return
        except (Exception, Interrupt) as exc:
            self._record_failure(attempt, task, exc, ctx)
            return
        finally:
            self.running.leave(job.id)
            self._last_cancel_poll.pop(job.id, None)
        self.progress.pop_latest(job.id)
        self._finish(job, attempt, result=result, usage=ctx.usage)

    def _record_failure(self, attempt: Attempt, task: Task, exc: BaseException, ctx: JobContext) -> None:
        job = attempt.job
        error = describe_error(exc, task)
        latest = self.progress.pop_latest(job.id)
        if error.transient and job.may_retry:
            self._schedule_retry(attempt, error, ctx.usage, latest)
        else:
            logger.info("job %s failed for good after %d attempt(s): %s", job.id, job.attempts, error.type)
            self._finish(job, attempt, error=error, usage=ctx.usage, progress=latest)

    def _schedule_retry(self, attempt: Attempt, error: JobError, usage: Usage, progress: Progress | None) -> None:
        job = attempt.job
        delay_s = compute_backoff_s(
            job.attempts - 1, base_s=self.settings.retry_backoff_base_s, cap_s=self.settings.retry_backoff_cap_s
        )
        retry_at = utcnow() + timedelta(seconds=delay_s)
        detail = f"attempt {job.attempts} failed ({error.type}); next attempt in {delay_s:.1f} s"

        def write(jobs: JobStore, state: AttemptState) -> Awaitable[None]:
            return jobs.schedule_retry(
                job.id,
                attempt=state,
                error=error,
                retry_at=retry_at,
                detail=detail,
                usage=usage,
                progress=progress,
            )

        if self._write_outcome(job, JobState.RETRYING, attempt, write):
            retrying = job.model_copy(update={"state": JobState.RETRYING})
            data = {"attempt": job.attempts, "next_attempt_at": retry_at.isoformat(), "error": error}
            self.publish(retrying, EventType.JOB_RETRYING, to_jsonable_python(data))

    def _finish(
        self,
        job: JobDocument,
        attempt: Attempt | None,
        *,
        result: Any = None,
        error: JobError | None = None,
        usage: Usage | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Record the outcome (of a started ``attempt``, or of a job that could not start): completed with
        ``result``, or failed with ``error``; then announce it."""
        to = JobState.COMPLETED if error is None else JobState.FAILED
        # The outcome event's id is stored with the outcome, so a redelivered message can re-publish the very
        # same event (and gateways drop the repeat).
        outcome = _outcome_event(job.model_copy(update={"state": to, "result": result, "error": error}))
        finished_at = utcnow()

        def write(jobs: JobStore, state: AttemptState) -> Awaitable[None]:
            if error is None:
                done = usage or Usage()
                return jobs.complete(
                    job.id, attempt=state, result=result, usage=done, finished_at=finished_at, outcome=outcome
                )
            return jobs.fail(
                job.id,
                attempt=state,
                error=error,
                finished_at=finished_at,
                outcome=outcome,
                usage=usage,
                progress=progress,
            )

        if not self._write_outcome(job, to, attempt, write):
            return
        ran_s = None
        if attempt is not None and job.started_at is not None:
            ran_s = (finished_at - job.started_at).total_seconds()
        count_finished(job.engine, job.task, to, duration_s=ran_s)
        self._publish_event(outcome)

    def _announce_outcome(self, job: JobDocument) -> None:
        """Publish the job's outcome event again, with the id stored with it, so gateways can drop a repeat."""
        if job.outcome_event is not None:
            self._publish_event(_outcome_event(job).model_copy(update=job.outcome_event))

    def _write_outcome(
        self,
        job: JobDocument,
        to: JobState,
        attempt: Attempt | None,
        write: Callable[[JobStore, AttemptState], Awaitable[None]],
    ) -> bool:
        """Write the outcome if the job is still where this worker left it; False if it moved on (cancelled).

        Where ``attempt``'s start is not written yet, this one write records it too: queued → running → ``to``.
        Where it is, the write is fenced to this worker's attempt (``RunningAttempt``).
        """
        self.slots.mark_ending(job.id)  # a message of the job from now on is its next attempt (admission.py)
        state: AttemptState = None
        if attempt is not None:
            written = attempt.start.settle()
            if written is StartWrite.REFUSED:
                return False
            if written is StartWrite.PENDING:
                state = attempt.claim
            else:
                state = RunningAttempt(worker_id=self.worker_id, attempts=job.attempts)

        async def record(stores: WorkerStores) -> None:
            # The job's start and progress records, if still lingering, wait for its outcome's: one write for all.
            stores.events.postpone_lingering(OUTCOME_WRITE_WAIT_S)
            await write(stores.jobs, state)

        try:
            self._call(record)
        except InvalidTransition:
            expected = JobState.RUNNING if isinstance(state, RunningAttempt) else JobState.QUEUED
            logger.info("job %s left %s before it could be marked %s", job.id, expected, to)
            return False
        return True

    # -- JobReporter, for JobContext --

    def report_progress(self, job: JobDocument, progress: Progress) -> None:
        if self.running.is_cancelled(job.id):
            return
        if self.progress.offer(job.id, progress):
            self._call(lambda stores: stores.jobs.set_progress(job.id, progress, self.worker_id))
        self.publish(job, EventType.JOB_PROGRESS, progress.model_dump(), wait=False)

    def is_cancelled(self, job: JobDocument) -> bool:
        if self.running.is_cancelled(job.id):
            return True
        now = time.monotonic()
        if now - self._last_cancel_poll.get(job.id, float("-inf")) < CANCEL_POLL_INTERVAL_S:
            return False
        self._last_cancel_poll[job.id] = now
        current = self._call(lambda stores: stores.jobs.get(job.id))
        return current is None or current.state == JobState.CANCELLED

    def _on_cancel_event(self, event: Event) -> None:
        if event.job_id is not None:
            self.running.cancel(event.job_id)
