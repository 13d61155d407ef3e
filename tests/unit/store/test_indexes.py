"""The queries workers and the scheduler make on every job or tick use an index (explain on SecantusDB)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pymongo
import pytest

from engineroom.core.config import Settings
from engineroom.store.client import connect, ensure_indexes

NOW = datetime(2026, 1, 1, tzinfo=UTC)

HOT_QUERIES: list[tuple[str, dict[str, Any], list[tuple[str, int]] | None]] = [
    ("parked jobs", {"engine": "general", "state": "queued", "parked": True}, [("priority", -1), ("_id", 1)]),
    ("due retries", {"state": "retrying", "next_attempt_at": {"$lte": NOW}}, [("next_attempt_at", 1)]),
    ("expired leases", {"state": "running", "lease_expires_at": {"$lt": NOW}}, [("lease_expires_at", 1)]),
    ("outbox", {"needs_dispatch": True, "state": "queued", "queued_at": {"$lt": NOW}}, [("queued_at", 1)]),
    ("the autoscaler's ready backlog", {"engine": "general", "state": "queued", "parked": False}, None),
    (
        "jobs expected in RabbitMQ, a priority at a time",
        {"engine": "general", "state": "queued", "parked": False, "priority": 5, "_id": {"$gt": "0"}},
        [("_id", 1)],
    ),
    (
        "jobs expected in RabbitMQ, of a priority made before a time",
        {"engine": "general", "state": "queued", "parked": False, "priority": 5, "_id": {"$lt": "Z"}},
        None,
    ),
    ("position", {"engine": "general", "state": "queued", "priority": {"$gt": 5}}, None),
    ("due scheduled jobs", {"state": "scheduled", "scheduled_at": {"$lte": NOW}}, [("scheduled_at", 1)]),
    ("pending jobs", {"state": "pending", "_id": {"$gt": "0"}}, [("_id", 1)]),
    ("GET /jobs, own", {"tenant_id": "t", "user_id": "u"}, [("_id", -1)]),
    ("GET /status, a state's total", {"state": "queued"}, None),
    ("GET /usage, own", {"tenant_id": "t", "user_id": "u", "_id": {"$gte": "0", "$lt": "Z"}}, None),
    ("GET /usage, an admin's tenant", {"tenant_id": "t", "_id": {"$gte": "0", "$lt": "Z"}}, None),
    ("GET /status, oldest queued", {"state": "queued"}, [("queued_at", 1)]),
    ("GET /status, errors of the day", {"finished_at": {"$gte": NOW}, "state": "failed"}, None),
    ("cleanup, one state at a time", {"state": "failed", "finished_at": {"$lt": NOW}}, None),
    ("GET /queues and /status, finished lately", {"finished_at": {"$gte": NOW}}, None),
]

#: Queries on other collections, made on every socket resume or notification listing.
OTHER_QUERIES: list[tuple[str, str, dict[str, Any], list[tuple[str, int]]]] = [
    ("replay of a user's events", "events", {"tenant_id": "t", "user_id": "u", "_id": {"$gt": "0"}}, [("_id", 1)]),
    ("replay of a tenant's events", "events", {"tenant_id": "t", "_id": {"$gt": "0"}}, [("_id", 1)]),
    ("replay of a job's events", "events", {"job_id": "J", "_id": {"$gt": "0"}}, [("_id", 1)]),
    ("replay of a workflow's events", "events", {"workflow_id": "W", "_id": {"$gt": "0"}}, [("_id", 1)]),
    ("replay of queue events", "events", {"audience": "admins", "_id": {"$gt": "0"}}, [("_id", 1)]),
    ("unread notifications", "notifications", {"tenant_id": "t", "user_id": "u", "read_at": None}, [("_id", -1)]),
]


def _stages(plan: dict[str, Any]) -> list[str]:
    stages = []
    while plan:
        stages.append(plan.get("stage", ""))
        plan = plan.get("inputStage", {})
    return stages


@pytest.fixture
def jobs_collection(settings: Settings, mongodb_url: str) -> Iterator[Any]:
    async def create() -> None:
        client = connect(settings.model_copy(update={"mongodb_url": mongodb_url}))
        await ensure_indexes(client[settings.mongodb_db], retention_days=30)
        client.close()

    asyncio.run(create())
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongodb_url)
    collection = client[settings.mongodb_db]["jobs"]
    collection.insert_many([{"_id": f"J{n:04d}", "engine": "general", "state": "completed"} for n in range(50)])
    yield collection
    client.close()


@pytest.mark.parametrize(("name", "query", "sort"), HOT_QUERIES, ids=[name for name, _, _ in HOT_QUERIES])
def test_hot_queries_scan_an_index_not_the_collection(
    jobs_collection: Any, name: str, query: dict[str, Any], sort: list[tuple[str, int]] | None
) -> None:
    cursor = jobs_collection.find(query)
    if sort:
        cursor = cursor.sort(sort)
    stages = _stages(cursor.limit(1).explain()["queryPlanner"]["winningPlan"])
    assert "IXSCAN" in stages and "COLLSCAN" not in stages, (name, stages)


def test_the_due_schedules_sweep_scans_an_index(jobs_collection: Any) -> None:
    schedules = jobs_collection.database["schedules"]
    cursor = schedules.find({"paused": False, "next_fire_at": {"$lte": NOW}}).sort("next_fire_at", 1).limit(1)
    stages = _stages(cursor.explain()["queryPlanner"]["winningPlan"])
    assert "IXSCAN" in stages and "COLLSCAN" not in stages, stages


@pytest.mark.parametrize(
    ("name", "collection", "query", "sort"), OTHER_QUERIES, ids=[name for name, _, _, _ in OTHER_QUERIES]
)
def test_replays_and_inbox_queries_scan_an_index(
    jobs_collection: Any, name: str, collection: str, query: dict[str, Any], sort: list[tuple[str, int]]
) -> None:
    cursor = jobs_collection.database[collection].find(query).sort(sort).limit(1)
    stages = _stages(cursor.explain()["queryPlanner"]["winningPlan"])
    assert "IXSCAN" in stages and "COLLSCAN" not in stages, (name, stages)


@pytest.mark.parametrize("channel", ["websocket", "email", "webhook"])
def test_the_notifiers_probe_for_an_enabled_event_type_scans_an_index(jobs_collection: Any, channel: str) -> None:
    preferences = jobs_collection.database["notification_preferences"]
    query = {f"{channel}.events": "job.started", f"{channel}.enabled": True}
    stages = _stages(preferences.find(query, {"_id": 1}).limit(1).explain()["queryPlanner"]["winningPlan"])
    assert "IXSCAN" in stages and "COLLSCAN" not in stages, stages
