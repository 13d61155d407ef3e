"""The scheduler's loop: while this process leads, sweep for due retries, orphaned jobs, unsent messages and due
cron schedules."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from engineroom.artifacts.base import ArtifactStore
from engineroom.artifacts.factory import build_artifact_store
from engineroom.artifacts.sweep import ArtifactSweeper
from engineroom.core.clock import utcnow
from engineroom.core.config import Settings
from engineroom.core.cron import SKIP_GRACE_S
from engineroom.core.errors import InvalidTransition, StoreUnavailable
from engineroom.core.ids import process_identity
from engineroom.core.metrics import count_finished
from engineroom.core.shutdown import SHUTDOWN_DB_BUDGET_S
from engineroom.models.event import EventType, job_event, queue_event
from engineroom.models.job import JobDocument, JobError, JobState
from engineroom.models.worker import WorkerPublic
from engineroom.scheduler.admission import pick_startable
from engineroom.scheduler.dependencies import Readiness, inputs_of, judge
from engineroom.scheduler.orphans import is_orphaned
from engineroom.scheduler.presence import SchedulerPresence
from engineroom.scheduler.reconcile import BrokerWatch
from engineroom.scheduler.schedules import ScheduleFirer
from engineroom.scheduler.workflows import finish_workflows
from engineroom.services.dispatch import Dispatcher
from engineroom.services.publisher import AsyncEventPublisher
from engineroom.services.submission import JobSubmitter
from engineroom.store.client import Database, bounded
from engineroom.store.jobs import JobStore
from engineroom.store.leases import LeaseStore
from engineroom.store.queues import QueueStore
from engineroom.store.schedules import ScheduleStore
from engineroom.store.workers import WorkerStore
from engineroom.store.workflows import WorkflowStore

logger = logging.getLogger(__name__)

#: A tick phase slower than this is logged (a stalled scheduler releases no retries, parked or unsent jobs).
SLOW_PHASE_S = 2.0

#: Seconds between two sweeps for due pauses and due cron ticks (both are whole-second affairs).
PACED_PHASE_S = 1.0

#: The lease that makes one scheduler the leader.
LEADER_LEASE = "scheduler"
#: Jobs one sweep handles at most; the next tick takes the rest.
SWEEP_BATCH = 200
#: Parked jobs read beyond an engine's room, to step over tenants at their cap.
PARKED_LOOKAHEAD = 50
#: Seconds between two looks at the parked jobs of the engines without a per-tenant cap. Only that cap parks a job,
#: so such an engine has parked jobs only if its cap was lifted while they waited; a look every tick at each of the
#: seven engines was most of the scheduler's queries, at rest and under load alike.
UNCAPPED_PARKED_SWEEP_S = 5.0


@dataclass(frozen=True)
class SchedulerStores:
    """The collections the scheduler sweeps."""

    jobs: JobStore
    leases: LeaseStore
    queues: QueueStore
    workflows: WorkflowStore
    schedules: ScheduleStore
    workers: WorkerStore
    artifacts: ArtifactStore

    @classmethod
    def of(cls, db: Database, settings: Settings) -> SchedulerStores:
        queues = QueueStore(db, rate_window_s=settings.rate_window_s)
        workers = WorkerStore(db, stale_after_s=settings.job_lease_s)
        artifacts = build_artifact_store(settings, db)
        return cls(JobStore(db), LeaseStore(db), queues, WorkflowStore(db), ScheduleStore(db), workers, artifacts)


class Scheduler:
    def __init__(
        self, settings: Settings, stores: SchedulerStores, dispatcher: Dispatcher, publisher: AsyncEventPublisher
    ) -> None:
        self.settings = settings
        self.jobs = stores.jobs
        self.leases = stores.leases
        self.queues = stores.queues
        self.workflows = stores.workflows
        self.workers = stores.workers
        self.dispatcher = dispatcher
        self.publisher = publisher
        self.identity = process_identity()
        self.presence = SchedulerPresence(self.identity, stores.workers, interval_s=settings.job_lease_s / 3)
        #: A leader that stops renewing is replaced after this long.
        self.leader_ttl_s = max(5.0, 10 * settings.scheduler_interval_s)
        # Scheduled jobs are submitted like POST /jobs submits; a "skip" tick survives a leader fail-over.
        submitter = JobSubmitter(stores.jobs, dispatcher, publisher)
        grace_s = max(SKIP_GRACE_S, 2 * self.leader_ttl_s)
        self.schedule_firer = ScheduleFirer(stores.schedules, submitter, grace_s=grace_s)
        self.broker_watch = BrokerWatch(settings, stores.jobs, dispatcher)
        self.artifact_sweeper = ArtifactSweeper(stores.artifacts, stores.jobs)
        self._phases = self._paced_phases()
        #: When each phase runs next (``time.monotonic()``); a phase not in it yet runs at the next tick.
        self._next_run: dict[str, float] = {}

    async def run_forever(self) -> None:
        """Lead when the lease is free and sweep every ``scheduler_interval_s``; never returns on its own."""
        try:
            while True:
                try:
                    leading = await self.leases.acquire(LEADER_LEASE, self.identity, self.leader_ttl_s)
                    await self.presence.beat_if_due(leader=leading)
                    if leading:
                        await self.tick()
                except StoreUnavailable:
                    logger.warning("scheduler cannot reach MongoDB; retrying")
                await asyncio.sleep(self.settings.scheduler_interval_s)
        finally:
            await asyncio.shield(self._resign())

    async def _resign(self) -> None:
        try:
            with bounded(SHUTDOWN_DB_BUDGET_S):  # stopping: a MongoDB that does not answer is left to the lease's TTL
                await self.leases.release(LEADER_LEASE, self.identity)
                await self.presence.forget()
        except StoreUnavailable:
            logger.warning("could not release the scheduler lease; it expires in %.0f s", self.leader_ttl_s)

    async def tick(self) -> None:
        """Run every phase that is due: most each tick, the sweeps for rare events at their own pace."""
        now = time.monotonic()
        for name, phase, every_s in self._phases:
            if now < self._next_run.get(name, 0.0):
                continue
            self._next_run[name] = now + every_s
            started = time.monotonic()
            await phase()
            took_s = time.monotonic() - started
            # The lease is renewed between ticks only: a phase this slow risks another scheduler taking over.
            if took_s > SLOW_PHASE_S:
                logger.warning("scheduler tick: %s took %.1f s", name, took_s)

    def _paced_phases(self) -> list[tuple[str, Callable[[], Awaitable[None]], float]]:
        """The tick's phases in order, each with the seconds between its runs. Each sweep is a query or more on
        an idle system too, so those for rare events (a lost worker, a due pause or cron tick, an unsent message)
        run only as often as their own timescale asks: the database then answers a handful of queries a second
        at rest, not a dozen per tick."""
        tick_s, every_tick = self.settings.scheduler_interval_s, 0.0
        return [
            ("release_due_scheduled", self.release_due_scheduled, every_tick),
            ("release_ready_dependents", self.release_ready_dependents, every_tick),
            ("finish_workflows", lambda: finish_workflows(self.workflows, self.jobs, self.publisher), every_tick),
            ("release_due_retries", self.release_due_retries, every_tick),
            # A lease lapses after job_lease_s: looking four times as often finds an orphan soon enough.
            ("recover_orphans", self.recover_orphans, max(tick_s, self.settings.job_lease_s / 4)),
            ("reclaim_slots", self.reclaim_slots, max(tick_s, self.settings.job_lease_s / 4)),
            ("resume_due_pauses", self.resume_due_pauses, max(tick_s, PACED_PHASE_S)),
            ("fire_due_schedules", self.fire_due_schedules, max(tick_s, PACED_PHASE_S)),
            ("start_parked", self.start_parked, every_tick),
            ("start_parked_uncapped", lambda: self.start_parked(capped=False), max(tick_s, UNCAPPED_PARKED_SWEEP_S)),
            # A message is late only after dispatch_grace_s.
            ("send_undispatched", self.send_undispatched, max(tick_s, self.settings.dispatch_grace_s / 2)),
            ("resend_lost_messages", self.broker_watch.tick, every_tick),  # scheduler/reconcile.py: after the outbox
            ("sweep_artifacts", self.sweep_artifacts, max(tick_s, self.settings.artifact_sweep_interval_s)),
        ]

    async def sweep_artifacts(self) -> None:
        """Delete the files of jobs that are gone (the retention TTL deletes jobs without telling anyone)."""
        await self.artifact_sweeper.sweep()

    async def resume_due_pauses(self) -> None:
        """Resume engines paused ``until`` a time that has come."""
        for engine in await self.queues.due_resumes(utcnow()):
            queue = await self.queues.resume(engine)
            await self.publisher.publish(queue_event(queue, EventType.QUEUE_RESUMED, by="scheduler"))

    async def fire_due_schedules(self) -> None:
        """Submit one job for each due cron tick (``scheduler/schedules.py``)."""
        await self.schedule_firer.fire_due(utcnow())

    async def start_parked(self, *, capped: bool = True) -> None:
        """Send as many parked jobs of each engine with a per-tenant cap (or, not ``capped``, of each without one)
        as its limits have room for now, in priority order."""
        now = utcnow()
        for queue in await self.queues.all():
            if (queue.max_concurrency_per_tenant is not None) is not capped:
                continue
            room = queue.start_room(now, self.settings.rate_window_s)
            if room <= 0:
                continue
            candidates = await self.jobs.parked(queue.engine, room + PARKED_LOOKAHEAD)
            for job in pick_startable(queue, candidates, room, now):
                if released := await self.jobs.unpark(job):
                    await self.dispatcher.dispatch(released)

    async def release_due_scheduled(self) -> None:
        """``scheduled`` → ``queued`` for every job whose time has come, in due order, each at most once (the
        move is a conditional write)."""
        for job in await self.jobs.due_scheduled(utcnow(), SWEEP_BATCH):
            await self._requeue(job, JobState.SCHEDULED, detail="due")

    async def release_ready_dependents(self) -> None:
        """Start ``pending`` jobs whose dependencies allow it; skip (cancel, with the reason) those whose
        condition can no longer hold. Skips cascade: a skipped job is a cancelled dependency next tick."""
        after: str | None = None
        while batch := await self.jobs.pending(SWEEP_BATCH, after):
            for job in batch:
                dependencies = await self.jobs.outcomes(job.depends_on)
                verdict = judge(job.condition, dependencies, len(job.depends_on))
                if verdict.readiness == Readiness.READY:
                    await self._requeue(
                        job, JobState.PENDING, detail="dependencies met", inputs=inputs_of(dependencies)
                    )
                elif verdict.readiness == Readiness.SKIP:
                    await self._skip(job, verdict.reason or "skipped")
            after = batch[-1].id

    async def _skip(self, job: JobDocument, reason: str) -> None:
        try:
            await self.jobs.cancel(job.id, expected=[JobState.PENDING], detail=reason)
        except InvalidTransition:
            return
        skipped = job.model_copy(update={"state": JobState.CANCELLED})
        count_finished(job.engine, job.task, JobState.CANCELLED)
        await self.publisher.publish(job_event(skipped, EventType.JOB_CANCELLED, {"reason": reason, "skipped": True}))

    async def release_due_retries(self) -> None:
        """``retrying`` → ``queued`` for every job whose backoff is over, in due order."""
        for job in await self.jobs.due_retries(utcnow(), SWEEP_BATCH):
            await self._requeue(job, JobState.RETRYING, detail="backoff over")

    async def recover_orphans(self) -> None:
        """Re-queue ``running`` jobs whose worker is gone (lease lapsed, and the worker no longer live or no longer
        holding the job: ``scheduler/orphans.py``); fail those out of attempts, so a job that kills its worker every
        time cannot loop forever. A slow worker keeps its jobs."""
        lapsed = await self.jobs.expired_leases(utcnow(), SWEEP_BATCH)
        if not lapsed:
            return
        live_workers = {worker.id: worker for worker in await self._not_gone_workers()}
        for job in lapsed:
            if not is_orphaned(job, live_workers):
                logger.debug("the lease of job %s lapsed, but worker %s is alive and runs it", job.id, job.worker_id)
                continue
            lost = f"worker {job.worker_id} stopped renewing the lease of attempt {job.attempts}"
            await self.queues.release(job.engine, job.id, job.worker_id or "")
            if job.may_retry:
                await self._requeue(job, JobState.RUNNING, detail=lost)  # only while its lease is the lapsed one
            else:
                await self._fail_lost(job, lost)

    async def _not_gone_workers(self) -> list[WorkerPublic]:
        """Workers that beat within two job leases: one late heartbeat (a loaded host, a saturated database) does not
        make a worker gone, so its jobs and slots are not taken while it runs them."""
        return await self.workers.live(utcnow() - timedelta(seconds=self.settings.job_lease_s))

    async def reclaim_slots(self) -> None:
        """Free the engine slots of workers that are gone: not live (``GET /workers``) and not renewing for a job
        lease. A slot's own lease is longer (``Settings.slot_lease_s``), so a live worker's slots never lapse
        because its heartbeat is late; a dead one's come back here, about as soon as its jobs are re-queued."""
        now = utcnow()
        queues = [queue for queue in await self.queues.all() if queue.holders]
        if not queues:
            return
        live_workers = {worker.id for worker in await self._not_gone_workers()}
        # A holder renewed at r expires at r + slot_lease_s: one not renewed for a job lease expires before this.
        stale_before = now + timedelta(seconds=self.settings.slot_lease_s - self.settings.job_lease_s)
        for queue in queues:
            for holder in queue.live_holders(now):
                if holder.worker_id not in live_workers and holder.expires_at < stale_before:
                    logger.info(
                        "freeing the %s slot held for job %s by worker %s: the worker is gone",
                        queue.engine,
                        holder.job_id,
                        holder.worker_id,
                    )
                    await self.queues.release(queue.engine, holder.job_id, holder.worker_id)

    async def send_undispatched(self) -> None:
        """Send the messages of jobs stored while RabbitMQ was unreachable (or whose sender died)."""
        queued_before = utcnow() - timedelta(seconds=self.settings.dispatch_grace_s)
        for job in await self.jobs.undispatched(queued_before, SWEEP_BATCH):
            if not await self.dispatcher.dispatch(job):
                return  # RabbitMQ is still down: try again next tick
        await self.dispatcher.send_overdue_batches(queued_before, SWEEP_BATCH)  # batch submits' outbox records

    async def _requeue(
        self, job: JobDocument, source: JobState, *, detail: str, inputs: dict[str, object] | None = None
    ) -> None:
        try:
            queued = await self.jobs.requeue(job, source=source, detail=detail, inputs=inputs)
        except InvalidTransition:
            return  # it moved on meanwhile (cancelled, or its worker came back)
        await self.publisher.publish(job_event(queued, EventType.JOB_QUEUED, {"priority": job.priority}))
        await self.dispatcher.dispatch(queued)  # announced first: its worker's job.started must come after

    async def _fail_lost(self, job: JobDocument, detail: str) -> None:
        error = JobError(type="WorkerLost", message=detail, transient=True)
        try:
            await self.jobs.fail_lost(job.id, error=error, detail=detail)
        except InvalidTransition:
            return
        failed = job.model_copy(update={"state": JobState.FAILED})
        count_finished(job.engine, job.task, JobState.FAILED)
        await self.publisher.publish(job_event(failed, EventType.JOB_FAILED, {"error": error.model_dump()}))


async def run_scheduler(
    settings: Settings, db: Database, dispatcher: Dispatcher, publisher: AsyncEventPublisher
) -> None:
    """Run a scheduler over ``db`` until cancelled."""
    await Scheduler(settings, SchedulerStores.of(db, settings), dispatcher, publisher).run_forever()
