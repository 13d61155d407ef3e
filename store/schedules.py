"""The ``schedules`` collection: cron schedules, and the conditional write that claims each tick once.

A tick is claimed by moving ``next_fire_at`` from the value the claimer read to the next tick; only one of any
number of schedulers (a stale leader included) can match that, and only the one that did submits the job. The
claim also records the tick as ``pending_fire`` until its job is stored, so a scheduler that dies in between
leaves a trace the next sweep finishes (with the same idempotency key, so never twice).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ReturnDocument

from engineroom.core.errors import NotFound
from engineroom.models.principal import Principal
from engineroom.models.schedule import PendingFire, ScheduleDocument, SchedulePage, SchedulePublic
from engineroom.store.client import Database, journaled
from engineroom.store.documents import from_mongo, to_mongo
from engineroom.store.errors import run_once, safe_to_repeat
from engineroom.store.paging import newest_first
from engineroom.store.visibility import visible_to


class ScheduleStore:
    """Reads and writes schedule documents. Methods return models; pymongo failures leave as ``StoreUnavailable``."""

    def __init__(self, db: Database) -> None:
        self.collection = db["schedules"]
        self._accepting = journaled(db, "schedules")

    @run_once
    async def insert(self, schedule: ScheduleDocument) -> ScheduleDocument:
        """Run once: a repeat of an applied try would fail on its own id."""
        await self._accepting.insert_one(to_mongo(schedule))
        return schedule

    @safe_to_repeat
    async def get_visible(self, schedule_id: str, who: Principal) -> ScheduleDocument:
        """The schedule if ``who`` may see it.

        Raises:
          NotFound: it does not exist or belongs to someone else (indistinguishable on purpose).
        """
        document = await self.collection.find_one({"_id": schedule_id, **visible_to(who)})
        if document is None:
            raise NotFound(f"schedule {schedule_id} not found")
        return from_mongo(ScheduleDocument, document)

    async def list_visible(self, who: Principal, *, limit: int = 50, cursor: str | None = None) -> SchedulePage:
        """A page of the schedules ``who`` may see, newest first, starting after ``cursor`` (a schedule id)."""
        documents, more = await newest_first(self.collection, visible_to(who), limit=limit, cursor=cursor)
        items = [SchedulePublic.from_document(from_mongo(ScheduleDocument, document)) for document in documents]
        return SchedulePage(items=items, next_cursor=items[-1].id if more else None)

    @run_once
    async def delete_visible(self, schedule_id: str, who: Principal) -> None:
        """Delete the schedule if ``who`` may see it; a tick already claimed still gets its job. Run once: a repeat
        of an applied try would find nothing and say so.

        Raises:
          NotFound: absent or someone else's.
        """
        outcome = await self.collection.delete_one({"_id": schedule_id, **visible_to(who)})
        if outcome.deleted_count != 1:
            raise NotFound(f"schedule {schedule_id} not found")

    async def pause(self, schedule_id: str, who: Principal) -> ScheduleDocument:
        """Stop firing (pausing a paused schedule changes nothing).

        Raises:
          NotFound: absent or someone else's.
        """
        paused = await self._find_one_and_update({"_id": schedule_id, **visible_to(who)}, {"paused": True})
        if paused is None:
            raise NotFound(f"schedule {schedule_id} not found")
        return paused

    async def resume(self, schedule_id: str, who: Principal, *, next_fire_at: datetime) -> ScheduleDocument:
        """Fire a paused schedule again from ``next_fire_at``; one that is not paused keeps its times.

        Raises:
          NotFound: absent or someone else's.
        """
        query = {"_id": schedule_id, "paused": True, **visible_to(who)}
        resumed = await self._find_one_and_update(query, {"paused": False, "next_fire_at": next_fire_at})
        return resumed if resumed is not None else await self.get_visible(schedule_id, who)

    async def due(self, now: datetime, limit: int) -> list[ScheduleDocument]:
        """Schedules not paused whose ``next_fire_at`` has come, earliest first."""
        query = {"paused": False, "next_fire_at": {"$lte": now}}
        return await self._find_many(query, sort="next_fire_at", limit=limit)

    @safe_to_repeat
    async def claim_tick(
        self, schedule_id: str, *, expected: datetime, next_fire_at: datetime, tick: datetime | None, now: datetime
    ) -> bool:
        """Move ``next_fire_at`` from ``expected`` to ``next_fire_at`` only if it still is ``expected`` and the
        schedule is not paused; with a ``tick``, record it as fired and pending its job. False: another scheduler
        claimed it first, or the schedule was paused or deleted meanwhile (then fire nothing). Safe to repeat: a
        conditional move; a claim whose answer was lost is left ``pending_fire``, which ``stale_pending`` finds."""
        changes: dict[str, Any] = {"next_fire_at": next_fire_at}
        if tick is not None:
            changes |= {"last_fired_at": tick, "pending_fire": PendingFire(tick=tick, claimed_at=now).model_dump()}
        query = {"_id": schedule_id, "next_fire_at": expected, "paused": False}
        outcome = await self.collection.update_one(query, {"$set": changes})
        return outcome.matched_count == 1

    async def stale_pending(self, claimed_before: datetime, limit: int) -> list[ScheduleDocument]:
        """Schedules with a tick claimed before ``claimed_before`` whose job was never recorded (its claimer died)."""
        query = {"pending_fire.claimed_at": {"$lt": claimed_before}}
        return await self._find_many(query, sort="pending_fire.claimed_at", limit=limit)

    @safe_to_repeat
    async def record_fired(self, schedule_id: str, tick: datetime, *, job_id: str | None, error: str | None) -> None:
        """Clear the pending ``tick`` and record its outcome: the job made, or why none could be."""
        fields: dict[str, Any] = {"pending_fire": None, "last_error": error}
        if job_id is not None:
            fields["last_job_id"] = job_id
        await self.collection.update_one({"_id": schedule_id, "pending_fire.tick": tick}, {"$set": fields})

    @safe_to_repeat
    async def pause_broken(self, schedule_id: str, error: str) -> None:
        """Pause a schedule whose times cannot be computed any more, saying why, so it is not retried every tick."""
        await self.collection.update_one({"_id": schedule_id}, {"$set": {"paused": True, "last_error": error}})

    @safe_to_repeat
    async def _find_one_and_update(self, query: dict[str, Any], fields: dict[str, Any]) -> ScheduleDocument | None:
        """A ``$set`` of given values (pause, resume): a repeat changes nothing."""
        document = await self.collection.find_one_and_update(
            query, {"$set": fields}, return_document=ReturnDocument.AFTER
        )
        return None if document is None else from_mongo(ScheduleDocument, document)

    @safe_to_repeat
    async def _find_many(self, query: dict[str, Any], *, sort: str, limit: int) -> list[ScheduleDocument]:
        documents = await self.collection.find(query).sort(sort, 1).limit(limit).to_list(limit)
        return [from_mongo(ScheduleDocument, document) for document in documents]
