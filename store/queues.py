"""The ``queues`` collection: one document per engine with its pause state, its limits and its slots.

Admission is one conditional update of that document: it matches only when the engine is not paused and has
a free slot (cluster-wide, per tenant) and a start left in the rate window, and then takes the slot. So no
number of workers can start more jobs than the limits allow, and a worker that dies leaves only a slot lease
that lapses by itself.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument

from engineroom.core.clock import utcnow
from engineroom.core.config import DEFAULT_ENGINE_CONCURRENCY
from engineroom.core.errors import NotFound
from engineroom.models.queue import QueueDocument, QueueLimits
from engineroom.store.client import Database
from engineroom.store.documents import from_mongo
from engineroom.store.errors import run_once, safe_to_repeat

#: A bound for limits that are not set, inside MongoDB expressions.
_UNLIMITED = 2**31


def _live(field: str, now: datetime) -> dict[str, Any]:
    """The entries of an array field still in force at ``now``."""
    if field == "holders":
        return {"$filter": {"input": "$holders", "cond": {"$gt": ["$$this.expires_at", now]}}}
    return {"$filter": {"input": f"${field}", "cond": {"$gt": ["$$this", now]}}}


class QueueStore:
    def __init__(self, db: Database, *, rate_window_s: float = 60.0) -> None:
        self.collection = db["queues"]
        self.rate_window_s = rate_window_s

    @safe_to_repeat
    async def ensure_defaults(self) -> None:
        """Create each engine's document with its default limit if it has none (never overwrites)."""
        for engine, limit in DEFAULT_ENGINE_CONCURRENCY.items():
            await self.collection.update_one(
                {"_id": engine},
                {"$setOnInsert": {"max_concurrency": limit, "paused": False, "holders": [], "starts": []}},
                upsert=True,
            )

    @safe_to_repeat
    async def get(self, engine: str) -> QueueDocument:
        """
        Raises:
          NotFound: no such engine.
        """
        document = await self.collection.find_one({"_id": engine})
        if document is None:
            raise NotFound(f"no engine {engine!r}")
        return from_mongo(QueueDocument, document, id_field="engine")

    @safe_to_repeat
    async def all(self) -> list[QueueDocument]:
        documents = await self.collection.find({}).sort("_id", 1).to_list(None)
        return [from_mongo(QueueDocument, document, id_field="engine") for document in documents]

    async def set_limits(self, engine: str, limits: QueueLimits) -> QueueDocument:
        """Apply the limits given (``exclude_unset``), leaving the others."""
        return await self._update(engine, {"$set": limits.model_dump(exclude_unset=True)})

    async def pause(self, engine: str, *, by: str, reason: str, until: datetime | None) -> QueueDocument:
        fields = {"paused": True, "paused_by": by, "paused_at": utcnow(), "reason": reason, "until": until}
        return await self._update(engine, {"$set": fields})

    async def resume(self, engine: str) -> QueueDocument:
        fields = {"paused": False, "paused_by": None, "paused_at": None, "reason": None, "until": None}
        return await self._update(engine, {"$set": fields})

    @safe_to_repeat
    async def due_resumes(self, now: datetime) -> list[str]:
        """Engines paused ``until`` a time that has come."""
        documents = await self.collection.find({"paused": True, "until": {"$lte": now}}, {"_id": 1}).to_list(None)
        return [document["_id"] for document in documents]

    @run_once
    async def try_acquire(
        self,
        engine: str,
        *,
        job_id: str,
        tenant_id: str,
        worker_id: str,
        until: datetime,
        now: datetime,
        replacing: str | None = None,
    ) -> bool:
        """Take a slot of ``engine`` for the job if the engine is not paused and every limit allows a start now;
        with ``replacing``, take over the slot ``worker_id`` holds for that job instead (a hand-over: the limits are
        checked as if that slot were free, and it is freed only if this one is taken).

        One conditional update: the filter checks the limits against the live slots (lapsed ones ignored),
        the update drops lapsed slots and start times and records this one. Run once: a repeat of an applied try would
        find the job holding a slot and answer that it got none, leaving that slot to lapse.
        """
        holders, starts = _live("holders", now), _live("starts", now - timedelta(seconds=self.rate_window_s))
        if replacing is not None:
            handed_over = {"$and": [{"$eq": ["$$this.job_id", replacing]}, {"$eq": ["$$this.worker_id", worker_id]}]}
            holders = {"$filter": {"input": holders, "cond": {"$not": [handed_over]}}}
        tenant_holders = {"$filter": {"input": holders, "cond": {"$eq": ["$$this.tenant_id", tenant_id]}}}
        query = {
            "_id": engine,
            "paused": {"$ne": True},
            "$expr": {
                "$and": [
                    # One slot per job: a duplicate message of a job being started elsewhere gets none (and
                    # cannot later release the other's slot).
                    {"$not": [{"$in": [job_id, {"$map": {"input": holders, "in": "$$this.job_id"}}]}]},
                    {"$lt": [{"$size": holders}, "$max_concurrency"]},
                    {"$lt": [{"$size": starts}, {"$ifNull": ["$max_starts_per_minute", _UNLIMITED]}]},
                    {"$lt": [{"$size": tenant_holders}, {"$ifNull": ["$max_concurrency_per_tenant", _UNLIMITED]}]},
                ]
            },
        }
        holder = {"job_id": job_id, "tenant_id": tenant_id, "worker_id": worker_id, "expires_at": until}
        # Start times are kept only while a rate limit is set, so an unlimited engine's document stays small.
        recorded_starts = {"$cond": [{"$eq": [{"$ifNull": ["$max_starts_per_minute", None]}, None]}, [], starts]}
        update = [
            {
                "$set": {
                    "holders": {"$concatArrays": [holders, [holder]]},
                    "starts": {"$concatArrays": [recorded_starts, [now]]},
                }
            }
        ]
        outcome = await self.collection.update_one(query, update)
        return outcome.matched_count == 1

    @safe_to_repeat
    async def release(self, engine: str, job_id: str, worker_id: str) -> None:
        """Give back the slot ``worker_id`` holds for the job (a no-op if it already lapsed or was taken from it):
        a worker that lost the job never frees the slot of the one it was given to."""
        await self.collection.update_one(
            {"_id": engine}, {"$pull": {"holders": {"job_id": job_id, "worker_id": worker_id}}}
        )

    @safe_to_repeat
    async def renew(self, job_ids: Collection[str], worker_id: str, until: datetime) -> None:
        """Extend the slot leases ``worker_id`` holds for the given jobs, wherever they are held (its heartbeat);
        never the slot another worker holds for the same job."""
        if not job_ids:
            return
        ids = list(job_ids)
        renewed = {"$mergeObjects": ["$$this", {"expires_at": until}]}
        ours = {"$and": [{"$in": ["$$this.job_id", ids]}, {"$eq": ["$$this.worker_id", worker_id]}]}
        update = [{"$set": {"holders": {"$map": {"input": "$holders", "in": {"$cond": [ours, renewed, "$$this"]}}}}}]
        await self.collection.update_many({"holders.job_id": {"$in": ids}}, update)

    @safe_to_repeat
    async def _update(self, engine: str, update: dict[str, Any]) -> QueueDocument:
        """A ``$set`` of given values (limits, pause, resume): a repeat changes nothing."""
        document = await self.collection.find_one_and_update(
            {"_id": engine}, update, return_document=ReturnDocument.AFTER
        )
        if document is None:
            raise NotFound(f"no engine {engine!r}")
        return from_mongo(QueueDocument, document, id_field="engine")
