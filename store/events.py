"""The ``events`` collection: every published event, kept ``events_ttl_s`` so sockets can resume.

Events are recorded *before* they are published. A gateway registers a resuming socket for live events
*before* it reads what was recorded, so every event is either in the replay or arrives live (or both, and the
socket drops the repeat): no gap. Ids sort by time (``core.ids``), so replay order is id order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from pymongo import ASCENDING, InsertOne
from pymongo.errors import BulkWriteError

from engineroom.models.event import Event
from engineroom.store.client import Database
from engineroom.store.documents import from_mongo, to_mongo
from engineroom.store.errors import safe_to_repeat
from engineroom.store.event_keys import key_for, keys_of

#: Events read per query while replaying.
REPLAY_PAGE = 500
#: Most events one ``insert_many`` records.
RECORD_BATCH = 500
#: MongoDB's duplicate-key error code.
DUPLICATE_KEY = 11000


def _query_for(routing_key: str) -> dict[str, Any]:
    """The stored events under one of ``notifications.topics``' routing keys."""
    return {"keys": key_for(routing_key)}


class EventStore:
    def __init__(self, db: Database, *, ttl_s: float) -> None:
        self.collection = db["events"]
        self.ttl = timedelta(seconds=ttl_s)
        #: Events waiting for the next group write, each with its caller's future (all on one event loop).
        self._waiting: list[tuple[Event, asyncio.Future[None]]] = []
        #: How many of ``_waiting`` wait for no timer: while there are any, the writer writes.
        self._due = 0
        self._writer: asyncio.Task[None] | None = None
        #: The timer of lingering events (``record``'s ``linger_s``): it makes them due.
        self._linger: asyncio.TimerHandle | None = None

    async def record(self, event: Event, *, linger_s: float = 0.0) -> None:
        """Store an event for replay; recording the same event twice (a re-announced outcome) is a no-op.

        Group commit: callers that arrive while a write is in flight wait for the next one, which records them all
        with one ``insert_many`` (several times cheaper per event than one insert each). A caller alone waits for
        no timer, so an idle system adds no latency; a busy one writes once per round trip. With ``linger_s``, a
        caller that nobody waits on (a job's start or progress) lets its event wait that long for company, even
        while a write is in flight: the next event of the same job, or its outcome, which writes them all at once.

        Raises:
          StoreUnavailable: MongoDB failed.
        """
        loop = asyncio.get_running_loop()
        recorded: asyncio.Future[None] = loop.create_future()
        self._waiting.append((event, recorded))
        if linger_s > 0:
            if self._linger is None:
                self._linger = loop.call_later(linger_s, self._make_all_due, loop)
        else:
            self._make_all_due(loop)  # an event that waits for none takes the lingering ones along
        await recorded

    def postpone_lingering(self, seconds: float) -> None:
        """Let the lingering events (if any wait for their timer) wait ``seconds`` more, or until a caller that waits
        comes: a job about to record its outcome takes its own start and progress along."""
        if self._linger is not None:
            self._linger.cancel()
            loop = asyncio.get_running_loop()
            self._linger = loop.call_later(seconds, self._make_all_due, loop)

    def _make_all_due(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._due = len(self._waiting)
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_waiting())

    async def _write_waiting(self) -> None:
        while self._due > 0:
            batch, self._waiting = self._waiting[:RECORD_BATCH], self._waiting[RECORD_BATCH:]
            self._due = max(0, self._due - len(batch))
            try:
                await self._insert([event for event, _ in batch])
            except Exception as exc:  # every caller must hear of it: a writer that dies silently would hang them
                for _, recorded in batch:
                    if not recorded.done():
                        recorded.set_exception(exc)
                continue
            for _, recorded in batch:
                if not recorded.done():
                    recorded.set_result(None)

    def record_operation(self, event: Event) -> InsertOne[dict[str, Any]]:
        """The insert that records ``event``, for a write that stores it together with what it announces (the
        notification store's one-round-trip insert); a duplicate key there means "recorded already"."""
        return InsertOne(self._document(event), namespace=f"{self.collection.database.name}.{self.collection.name}")

    def _document(self, event: Event) -> dict[str, Any]:
        document = to_mongo(event)
        return {**document, "expires_at": event.ts + self.ttl, "keys": keys_of(document)}

    @safe_to_repeat
    async def _insert(self, events: list[Event]) -> None:
        """Safe to repeat: an event already recorded (by an earlier try too) is a duplicate key, passed over."""
        documents = [self._document(event) for event in events]
        try:
            await self.collection.insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            if any(error.get("code") != DUPLICATE_KEY for error in exc.details.get("writeErrors", [])):
                raise
            if exc.details.get("writeConcernErrors"):
                raise

    async def after(self, routing_keys: Iterable[str], after: str, *, limit: int) -> tuple[list[Event], bool]:
        """Up to ``limit`` stored events under any of ``routing_keys`` with ids after ``after``, oldest first,
        and whether more follow.

        Each key is its own query (a range of the ``replay`` index); pages are merged so that no event is
        skipped where one key has more events than another.

        Raises:
          StoreUnavailable: MongoDB failed.
        """
        queries = [_query_for(key) for key in sorted(set(routing_keys))]
        found: dict[str, Event] = {}
        cursor = after
        while len(found) < limit:
            page, boundary = await self._merged_page(queries, cursor)
            found.update((event.id, event) for event in page)
            if boundary is None:
                return sorted(found.values(), key=lambda event: event.id)[:limit], False
            cursor = boundary
        events = sorted(found.values(), key=lambda event: event.id)
        return events[:limit], True

    @safe_to_repeat
    async def _merged_page(self, queries: list[dict[str, Any]], after: str) -> tuple[list[Event], str | None]:
        """One page of every query after ``after``, cut where the first full page ends (beyond it a query may
        not have been read yet), and that cut; ``None`` when every query is exhausted."""
        boundary: str | None = None
        documents: list[dict[str, Any]] = []
        for query in queries:
            page = await (
                self.collection.find({**query, "_id": {"$gt": after}})
                .sort("_id", ASCENDING)
                .limit(REPLAY_PAGE)
                .to_list(REPLAY_PAGE)
            )
            documents.extend(page)
            if len(page) == REPLAY_PAGE:
                last = page[-1]["_id"]
                boundary = last if boundary is None else min(boundary, last)
        kept = [document for document in documents if boundary is None or document["_id"] <= boundary]
        return [from_mongo(Event, document) for document in kept], boundary
