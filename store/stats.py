"""Figures over the ``jobs`` collection for ``GET /queues`` and ``GET /status``: counts by state, throughput,
durations, the commonest errors."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from engineroom.core.ids import id_floor
from engineroom.models.job import TERMINAL_STATES, JobState
from engineroom.models.queue import DurationPoint, ErrorCount
from engineroom.store.client import Database
from engineroom.store.errors import safe_to_repeat


@dataclass
class EngineFigures:
    """What the jobs collection says about one engine."""

    by_state: dict[str, int] = field(default_factory=dict)
    parked: int = 0
    completed_last_hour: int = 0
    failed_last_hour: int = 0
    finished_last_5_min: int = 0
    p50_duration_s: float | None = None
    p95_duration_s: float | None = None


class JobStats:
    """Reads only: every method is safe to repeat."""

    def __init__(self, db: Database) -> None:
        self.collection = db["jobs"]

    async def by_engine(self, now: datetime) -> dict[str, EngineFigures]:
        """Two aggregations for all engines: unfinished jobs by state, and jobs finished in the last hour."""
        figures: dict[str, EngineFigures] = defaultdict(EngineFigures)
        unfinished = [str(state) for state in JobState if state not in TERMINAL_STATES]
        for row in await self._aggregate(
            [
                {"$match": {"state": {"$in": unfinished}}},
                {"$group": {"_id": {"engine": "$engine", "state": "$state", "parked": "$parked"}, "n": {"$sum": 1}}},
            ]
        ):
            engine, state = row["_id"]["engine"], row["_id"]["state"]
            counts = figures[engine].by_state
            counts[state] = counts.get(state, 0) + row["n"]
            if row["_id"].get("parked"):
                figures[engine].parked += row["n"]
        five_minutes_ago = now - timedelta(minutes=5)
        for row in await self._aggregate(
            [
                # finished_at alone first: the retention index serves it (SecantusDB plans no index for $in)
                {"$match": {"finished_at": {"$gte": now - timedelta(hours=1)}}},
                {"$match": {"state": {"$in": ["completed", "failed"]}}},
                {"$set": {"duration_ms": {"$subtract": ["$finished_at", "$started_at"]}}},
                {
                    "$group": {
                        "_id": "$engine",
                        "completed": {"$sum": {"$cond": [{"$eq": ["$state", "completed"]}, 1, 0]}},
                        "failed": {"$sum": {"$cond": [{"$eq": ["$state", "failed"]}, 1, 0]}},
                        "recent": {"$sum": {"$cond": [{"$gte": ["$finished_at", five_minutes_ago]}, 1, 0]}},
                        "durations": {
                            "$percentile": {"input": "$duration_ms", "p": [0.5, 0.95], "method": "approximate"}
                        },
                    }
                },
            ]
        ):
            engine_figures = figures[row["_id"]]
            engine_figures.completed_last_hour = row["completed"]
            engine_figures.failed_last_hour = row["failed"]
            engine_figures.finished_last_5_min = row["recent"]
            p50, p95 = row.get("durations") or (None, None)
            engine_figures.p50_duration_s = None if p50 is None else p50 / 1000
            engine_figures.p95_duration_s = None if p95 is None else p95 / 1000
        return figures

    async def active_by_engine(self) -> dict[str, dict[str, int]]:
        """Queued and running jobs per engine, ``{engine: {state: n}}``: one aggregation over the ``by_state``
        index, cheap enough for every Prometheus scrape."""
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        active = [str(JobState.QUEUED), str(JobState.RUNNING)]
        for row in await self._aggregate(
            [
                {"$match": {"state": {"$in": active}}},
                {"$group": {"_id": {"engine": "$engine", "state": "$state"}, "n": {"$sum": 1}}},
            ]
        ):
            counts[row["_id"]["engine"]][row["_id"]["state"]] = row["n"]
        return counts

    @safe_to_repeat
    async def ready(self, engines: Iterable[str]) -> int:
        """Queued jobs of ``engines`` that a worker process could start: the autoscaler's backlog.

        Parked jobs are left out: they wait for a cluster-wide concurrency slot, which another process would not
        free. One count per engine (SecantusDB plans no index for ``$in``), each a range of the ``parked`` index.
        Jobs a worker holds prefetched but has not started are still ``queued``, so they count: RabbitMQ's queue
        depth would miss those (and count parked ones' messages until they are consumed).

        Raises:
          StoreUnavailable: MongoDB did not answer.
        """
        total = 0
        for engine in engines:
            query = {"engine": engine, "state": str(JobState.QUEUED), "parked": False}
            total += await self.collection.count_documents(query)
        return total

    @safe_to_repeat
    async def _aggregate(self, pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self.collection.aggregate(pipeline).to_list(None)
        return rows

    @safe_to_repeat
    async def totals_by_state(self) -> dict[str, int]:
        """Every stored job by state: one counted index range per state, never a collection scan."""
        return {str(state): await self.collection.count_documents({"state": str(state)}) for state in JobState}

    @safe_to_repeat
    async def oldest_queued_at(self) -> datetime | None:
        oldest = await self.collection.find_one(
            {"state": str(JobState.QUEUED)}, {"queued_at": 1}, sort=[("queued_at", 1)]
        )
        return None if oldest is None else oldest["queued_at"]

    async def top_errors(self, now: datetime, *, engine: str | None = None, limit: int = 10) -> list[ErrorCount]:
        """The commonest error types of failed jobs over the last day (and how many in the last hour), by
        engine and task."""
        match: dict[str, Any] = {"state": str(JobState.FAILED)}
        if engine is not None:
            match["engine"] = engine
        hour_ago = now - timedelta(hours=1)
        rows = await self._aggregate(
            [
                # finished_at alone first: the retention index serves it on any index set (MongoDB merges the two)
                {"$match": {"finished_at": {"$gte": now - timedelta(days=1)}}},
                {"$match": match},
                {
                    "$group": {
                        "_id": {"engine": "$engine", "task": "$task", "type": "$error.type"},
                        "last_day": {"$sum": 1},
                        "last_hour": {"$sum": {"$cond": [{"$gte": ["$finished_at", hour_ago]}, 1, 0]}},
                    }
                },
                {"$sort": {"last_day": -1}},
                {"$limit": limit},
            ]
        )
        return [
            ErrorCount(
                engine=row["_id"]["engine"],
                task=row["_id"]["task"],
                error_type=row["_id"].get("type") or "unknown",
                last_hour=row["last_hour"],
                last_day=row["last_day"],
            )
            for row in rows
        ]

    async def duration_trend(self, now: datetime, *, engine: str | None = None, hours: int = 24) -> list[DurationPoint]:
        """Finished jobs and their p50/p95 run time per hour, oldest hour first."""
        match: dict[str, Any] = {"state": {"$in": [str(JobState.COMPLETED), str(JobState.FAILED)]}}
        if engine is not None:
            match["engine"] = engine
        rows = await self._aggregate(
            [
                {"$match": {"finished_at": {"$gte": now - timedelta(hours=hours)}}},
                {"$match": match},
                {"$set": {"duration_ms": {"$subtract": ["$finished_at", "$started_at"]}}},
                {
                    "$group": {
                        "_id": {"$dateTrunc": {"date": "$finished_at", "unit": "hour"}},
                        "finished": {"$sum": 1},
                        "durations": {
                            "$percentile": {"input": "$duration_ms", "p": [0.5, 0.95], "method": "approximate"}
                        },
                    }
                },
                {"$sort": {"_id": 1}},
            ]
        )
        trend = []
        for row in rows:
            p50, p95 = row.get("durations") or (None, None)
            trend.append(
                DurationPoint(
                    hour=row["_id"],
                    finished=row["finished"],
                    p50_duration_s=None if p50 is None else p50 / 1000,
                    p95_duration_s=None if p95 is None else p95 / 1000,
                )
            )
        return trend


class UsageTotals:
    """Sums of the jobs' ``usage`` over a range of creation times (ids sort by time, so the range is an ``_id``
    range and the owner or tenant index serves it)."""

    #: Rows one report returns at most.
    MAX_ROWS = 200

    def __init__(self, db: Database) -> None:
        self.collection = db["jobs"]

    @safe_to_repeat
    async def sum(
        self, visible: dict[str, Any], since: datetime, until: datetime, group_by: str
    ) -> list[dict[str, Any]]:
        """Rows of {key, jobs, tokens_in, tokens_out, cost_usd}, highest cost first; ``group_by`` is job, user,
        engine or task."""
        field_of = {"job": "$_id", "user": "$user_id", "engine": "$engine", "task": "$task"}
        match = {**visible, "_id": {"$gte": id_floor(since), "$lt": id_floor(until)}}
        pipeline: list[dict[str, Any]] = [
            {"$match": match},
            {
                "$group": {
                    "_id": field_of[group_by],
                    "jobs": {"$sum": 1},
                    "tokens_in": {"$sum": "$usage.tokens_in"},
                    "tokens_out": {"$sum": "$usage.tokens_out"},
                    "cost_usd": {"$sum": "$usage.cost_usd"},
                }
            },
            {"$sort": {"cost_usd": -1, "_id": 1}},
            {"$limit": self.MAX_ROWS},
        ]
        rows = await self.collection.aggregate(pipeline).to_list(None)
        return [{**row, "key": str(row.pop("_id"))} for row in rows]
