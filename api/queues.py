"""Operating the engine queues: pause, resume, limits (each announced to admins), and the figures of each."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from engineroom.core.clock import utcnow
from engineroom.messaging.broker import Enqueuer
from engineroom.models.event import EventType, queue_event
from engineroom.models.principal import Principal
from engineroom.models.queue import (
    FailureAnalysis,
    PauseRequest,
    QueueDocument,
    QueueLimits,
    QueueStats,
)
from engineroom.services.publisher import AsyncEventPublisher
from engineroom.store.queues import QueueStore
from engineroom.store.stats import EngineFigures, JobStats


def _stats(queue: QueueDocument, figures: EngineFigures, broker_depth: int | None, rate_window_s: float) -> QueueStats:
    finished = figures.completed_last_hour + figures.failed_last_hour
    counts = figures.by_state
    now = utcnow()
    return QueueStats(
        **queue.model_dump(exclude={"holders", "starts"}),
        running=len(queue.live_holders(now)),
        queued=counts.get("queued", 0),
        # With no room, every queued job waits (in the engine's line or parked); with room, only parked ones do.
        waiting_for_slot=counts.get("queued", 0) if queue.start_room(now, rate_window_s) == 0 else figures.parked,
        scheduled=counts.get("scheduled", 0),
        retrying=counts.get("retrying", 0),
        pending=counts.get("pending", 0),
        broker_depth=broker_depth,
        completed_last_hour=figures.completed_last_hour,
        failed_last_hour=figures.failed_last_hour,
        success_rate=None if finished == 0 else figures.completed_last_hour / finished,
        jobs_per_minute=figures.finished_last_5_min / 5,
        p50_duration_s=figures.p50_duration_s,
        p95_duration_s=figures.p95_duration_s,
    )


async def failure_analysis(stats: JobStats, now: datetime, engine: str | None = None) -> FailureAnalysis:
    """The commonest errors over the last day and the run-time trend per hour, of one engine or all."""
    return FailureAnalysis(
        top_errors=await stats.top_errors(now, engine=engine),
        duration_trend=await stats.duration_trend(now, engine=engine),
    )


#: Seconds the figures behind ``eta_s`` are reused.
FIGURES_TTL_S = 5.0


class QueueControl:
    def __init__(self, queues: QueueStore, stats: JobStats, enqueuer: Enqueuer, publisher: AsyncEventPublisher) -> None:
        self.queues = queues
        self.stats = stats
        self.enqueuer = enqueuer
        self.publisher = publisher
        self._figures: tuple[float, dict[str, EngineFigures]] | None = None

    async def analyse(self, engine: str) -> QueueStats:
        """One engine's figures with its failure analysis."""
        (stats,) = await self.describe(engine)
        analysis = await failure_analysis(self.stats, utcnow(), engine)
        return stats.model_copy(update=dict(analysis))

    async def describe(self, engine: str | None = None) -> list[QueueStats]:
        """Every engine's figures (or one engine's). Counts only: no job of any tenant shows through."""
        queues = [await self.queues.get(engine)] if engine is not None else await self.queues.all()
        figures = await self.stats.by_engine(utcnow())
        depths = await asyncio.gather(*(self.enqueuer.depth(queue.engine) for queue in queues))
        return [
            _stats(queue, figures.get(queue.engine, EngineFigures()), depth, self.queues.rate_window_s)
            for queue, depth in zip(queues, depths, strict=True)
        ]

    async def estimate_start_s(self, engine: str, position: int) -> float | None:
        """Seconds until a job with ``position`` jobs ahead starts: the waves ahead of it at the engine's
        concurrency times its median duration over the last hour; ``None`` while unknown or paused."""
        queue = await self.queues.get(engine)
        figures = (await self._recent_figures()).get(engine)
        if queue.paused or queue.max_concurrency == 0 or figures is None or figures.p50_duration_s is None:
            return None
        return (position // queue.max_concurrency + 1) * figures.p50_duration_s

    async def _recent_figures(self) -> dict[str, EngineFigures]:
        """The engines' figures, computed at most every ``FIGURES_TTL_S``: a queued job's ``eta_s`` is a rough
        estimate, not worth two aggregations on every read of the job."""
        now = time.monotonic()
        if self._figures is None or now - self._figures[0] > FIGURES_TTL_S:
            self._figures = (now, await self.stats.by_engine(utcnow()))
        return self._figures[1]

    async def pause(self, engine: str, request: PauseRequest, who: Principal) -> QueueDocument:
        queue = await self.queues.pause(engine, by=who.user_id, reason=request.reason, until=request.until)
        await self.publisher.publish(queue_event(queue, EventType.QUEUE_PAUSED, by=who.user_id))
        return queue

    async def resume(self, engine: str, who: Principal) -> QueueDocument:
        queue = await self.queues.resume(engine)
        await self.publisher.publish(queue_event(queue, EventType.QUEUE_RESUMED, by=who.user_id))
        return queue

    async def set_limits(self, engine: str, limits: QueueLimits, who: Principal) -> QueueDocument:
        queue = await self.queues.set_limits(engine, limits)
        await self.publisher.publish(queue_event(queue, EventType.QUEUE_LIMITS, by=who.user_id))
        return queue
