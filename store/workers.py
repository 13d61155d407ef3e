"""The ``workers`` collection: one heartbeat document per live worker, autoscaling supervisor or scheduler
process.

A process upserts its document every heartbeat, pushing ``expires_at`` forward; one that stops beating (killed,
host lost) drops out of ``live()`` at once and is removed by the TTL index soon after (MongoDB's TTL monitor runs
about once a minute, hence the filter too). A process that stops cleanly deletes its own.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from engineroom.core.clock import utcnow
from engineroom.models.worker import ProcessKind, WorkerDocument, WorkerPublic
from engineroom.store.client import Database
from engineroom.store.documents import from_mongo, to_mongo
from engineroom.store.errors import safe_to_repeat

#: Live processes listed at most: a cluster has tens, not thousands.
MAX_LISTED = 1000


class WorkerStore:
    def __init__(self, db: Database, *, stale_after_s: float) -> None:
        self.collection = db["workers"]
        #: A process whose last beat is older than this is taken for dead (about three heartbeats).
        self.stale_after_s = stale_after_s

    @safe_to_repeat
    async def beat(self, process: WorkerPublic) -> None:
        """Record that ``process`` was alive at its ``last_heartbeat``, as it describes itself."""
        document = WorkerDocument(
            **process.model_dump(), expires_at=process.last_heartbeat + timedelta(seconds=self.stale_after_s)
        )
        stored = to_mongo(document)
        await self.collection.replace_one({"_id": stored["_id"]}, stored, upsert=True)

    @safe_to_repeat
    async def remove(self, process_id: str) -> None:
        """Forget a process that stops cleanly, so it leaves the list at once."""
        await self.collection.delete_one({"_id": process_id})

    @safe_to_repeat
    async def live(self, now: datetime | None = None) -> list[WorkerPublic]:
        """Processes that beat within ``stale_after_s``, workers first (supervisors, schedulers after), oldest first."""
        documents = await self.collection.find({"expires_at": {"$gt": now or utcnow()}}).to_list(MAX_LISTED)
        processes = [from_mongo(WorkerDocument, document).public() for document in documents]
        return sorted(processes, key=lambda p: (p.kind != ProcessKind.WORKER, p.started_at, p.id))
