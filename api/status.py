"""``GET /status``: the pipeline's totals, throughput, backlog and failures in one place."""

from __future__ import annotations

from engineroom.api.queues import QueueControl, failure_analysis
from engineroom.core.clock import utcnow
from engineroom.models.status import PipelineStatus
from engineroom.store.stats import JobStats


class PipelineReport:
    def __init__(self, stats: JobStats, queues: QueueControl) -> None:
        self.stats = stats
        self.queues = queues

    async def status(self) -> PipelineStatus:
        now = utcnow()
        queues = await self.queues.describe()
        completed = sum(queue.completed_last_hour for queue in queues)
        finished = completed + sum(queue.failed_last_hour for queue in queues)
        longest = max(queues, key=lambda queue: queue.queued, default=None)
        oldest = await self.stats.oldest_queued_at()
        analysis = await failure_analysis(self.stats, now)
        return PipelineStatus(
            at=now,
            totals=await self.stats.totals_by_state(),
            success_rate_last_hour=None if finished == 0 else completed / finished,
            jobs_per_minute=sum(queue.jobs_per_minute for queue in queues),
            max_queue_size=0 if longest is None else longest.queued,
            max_queue_engine=None if longest is None or longest.queued == 0 else longest.engine,
            oldest_queued_age_s=None if oldest is None else (now - oldest).total_seconds(),
            **dict(analysis),
        )
