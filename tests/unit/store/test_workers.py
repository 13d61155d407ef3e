"""WorkerStore: live processes only, a clean stop removes its own, and lapsed documents expire by TTL index."""

from __future__ import annotations

from datetime import timedelta

from engineroom.core.clock import utcnow
from engineroom.models.worker import Autoscale, ProcessKind, WorkerPublic
from engineroom.store.client import Database
from engineroom.store.workers import WorkerStore


def process(process_id: str, *, beat_s_ago: float = 0, kind: ProcessKind = ProcessKind.WORKER) -> WorkerPublic:
    now = utcnow()
    return WorkerPublic(
        id=process_id,
        kind=kind,
        host="h",
        pid=1,
        engines=["general"],
        started_at=now - timedelta(hours=1),
        last_heartbeat=now - timedelta(seconds=beat_s_ago),
    )


async def test_only_processes_that_beat_lately_are_listed(db: Database) -> None:
    workers = WorkerStore(db, stale_after_s=30)
    await workers.beat(process("fresh", beat_s_ago=5))
    await workers.beat(process("stale", beat_s_ago=31))
    await workers.beat(process("sched", kind=ProcessKind.SCHEDULER))
    assert [listed.id for listed in await workers.live()] == ["fresh", "sched"]


async def test_a_beat_replaces_the_document_and_a_clean_stop_removes_it(db: Database) -> None:
    workers = WorkerStore(db, stale_after_s=30)
    await workers.beat(process("w", beat_s_ago=20))
    await workers.beat(process("w").model_copy(update={"current_job_ids": ["j1"]}))
    (listed,) = await workers.live()
    assert listed.current_job_ids == ["j1"]
    await workers.remove("w")
    assert await workers.live() == []


async def test_lapsed_documents_expire_by_a_ttl_index(db: Database) -> None:
    indexes = await db["workers"].index_information()
    assert indexes["workers_ttl"]["key"] == [("expires_at", 1)]
    assert indexes["workers_ttl"]["expireAfterSeconds"] == 0


async def test_a_supervisor_is_listed_after_workers_with_its_autoscale_status(db: Database) -> None:
    workers = WorkerStore(db, stale_after_s=30)
    status = Autoscale(processes=2, draining=1, min_processes=1, max_processes=3, backlog=14, last_decision="up")
    await workers.beat(process("sup", kind=ProcessKind.SUPERVISOR).model_copy(update={"autoscale": status}))
    await workers.beat(process("w"))
    listed = await workers.live()
    assert [(entry.id, entry.kind) for entry in listed] == [("w", ProcessKind.WORKER), ("sup", ProcessKind.SUPERVISOR)]
    assert listed[1].autoscale == status and listed[0].autoscale is None
