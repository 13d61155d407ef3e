"""The ``notifications`` collection: each user's inbox, and the delivery record of every email and webhook."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, cast

from pymongo import InsertOne, ReturnDocument
from pymongo.errors import ClientBulkWriteException, DuplicateKeyError, InvalidOperation

from engineroom.core.clock import utcnow
from engineroom.core.errors import NotFound
from engineroom.models.event import Event
from engineroom.models.notification import (
    DeliveryAttempt,
    DeliveryState,
    NotificationChannel,
    NotificationDocument,
    NotificationPage,
    NotificationPublic,
)
from engineroom.models.principal import Principal
from engineroom.store.client import Database
from engineroom.store.documents import from_mongo, to_mongo
from engineroom.store.errors import run_once, safe_to_repeat
from engineroom.store.events import DUPLICATE_KEY, EventStore
from engineroom.store.paging import newest_first

logger = logging.getLogger(__name__)


def _owned_by(who: Principal) -> dict[str, Any]:
    """Notifications are personal: admins see only their own too (unlike jobs)."""
    return {"tenant_id": who.tenant_id, "user_id": who.user_id}


class NotificationStore:
    """Reads and writes notification documents. Methods return models; pymongo failures leave as
    ``StoreUnavailable``."""

    def __init__(self, db: Database) -> None:
        self.collection = db["notifications"]
        #: MongoDB 8.0's cross-collection ``bulkWrite`` is there; cleared the first time pymongo says it is not.
        self._bulk_write_across_collections = True

    @run_once
    async def insert(self, notification: NotificationDocument) -> bool:
        """Store the notification unless one with its id (its source event's) exists; True if this stored it.

        Run once: a repeat of an applied try would find it stored and answer False, and it would never be announced.
        """
        try:
            await self.collection.insert_one(to_mongo(notification))
        except DuplicateKeyError:
            return False
        return True

    @run_once
    async def insert_all(
        self, notifications: Sequence[tuple[NotificationDocument, Event | None]], events: EventStore
    ) -> list[bool]:
        """Store each notification unless one with its id exists, and record its announcement (its
        ``notification.created``, where it has one) only if this stored it; which of them this stored, in order.

        One round trip from MongoDB 8.0 on: an ordered ``bulkWrite`` across the two collections stops at a
        notification a redelivered event finds stored, so no announcement is recorded that is never made; the writes
        after it go in another. Older servers take two writes per notification, one after the other.

        Raises:
          StoreUnavailable: MongoDB failed; a notification may be stored without its record (handling its event
          again finds it and announces it, recording it then).
        """
        if self._bulk_write_across_collections:
            try:
                return await self._insert_together(notifications, events)
            except InvalidOperation:  # pymongo refuses before sending anything when the server predates 8.0 (and
                # on a closed client, whose every later command fails anyway)
                logger.warning("MongoDB before 8.0: a notification and its event take two round trips")
                self._bulk_write_across_collections = False
        stored = []
        for notification, announcement in notifications:
            stored.append(await self.insert(notification))
            if stored[-1] and announcement is not None:
                await events.record(announcement)
        return stored

    async def _insert_together(
        self, notifications: Sequence[tuple[NotificationDocument, Event | None]], events: EventStore
    ) -> list[bool]:
        namespace = f"{self.collection.database.name}.{self.collection.name}"
        writes: list[tuple[int, bool]] = []  # per operation: the notification's index, and whether it is its record
        operations: list[InsertOne[dict[str, Any]]] = []
        for index, (notification, announcement) in enumerate(notifications):
            writes.append((index, False))
            operations.append(InsertOne(to_mongo(notification), namespace=namespace))
            if announcement is not None:
                writes.append((index, True))
                operations.append(events.record_operation(announcement))
        stored = [False] * len(notifications)
        start = 0
        while start < len(operations):
            duplicate = await self._insert_in_order(operations[start:])
            end = len(operations) if duplicate is None else start + duplicate
            for index, is_record in writes[start:end]:
                stored[index] = stored[index] or not is_record
            if duplicate is None:
                break
            index, is_record = writes[end]
            start = end + 1
            if not is_record and writes[start : start + 1] == [(index, True)]:
                start += 1  # the notification was stored before: its announcement is not recorded again
        return stored

    async def _insert_in_order(self, operations: list[InsertOne[dict[str, Any]]]) -> int | None:
        """Apply ``operations`` in order up to the first duplicate key; its position, or None if there was none."""
        try:
            await self.collection.database.client.bulk_write(operations, ordered=True)
        except ClientBulkWriteException as exc:
            # The server's error documents; pymongo 4.20 annotates them as ``WriteError``s, which they are not.
            errors = cast("list[dict[str, Any]]", exc.write_errors or [])
            duplicate = len(errors) == 1 and errors[0].get("code") == DUPLICATE_KEY
            if exc.error is not None or exc.write_concern_errors or not duplicate:
                raise
            return int(errors[0]["idx"])
        return None

    @safe_to_repeat
    async def get(self, notification_id: str) -> NotificationDocument | None:
        """Any user's notification: for the notifier and delivery actors, never for the API."""
        document = await self.collection.find_one({"_id": notification_id})
        return None if document is None else from_mongo(NotificationDocument, document)

    @safe_to_repeat
    async def list_own(
        self, who: Principal, *, unread: bool = False, limit: int = 50, cursor: str | None = None
    ) -> NotificationPage:
        """A page of ``who``'s notifications (only the unread ones if ``unread``), newest first."""
        query = _owned_by(who)
        if unread:
            query["read_at"] = None
        documents, more = await newest_first(self.collection, query, limit=limit, cursor=cursor)
        items = [NotificationPublic.from_document(from_mongo(NotificationDocument, document)) for document in documents]
        # the owner_unread_newest index covers it
        unread_count = await self.collection.count_documents({**_owned_by(who), "read_at": None})
        return NotificationPage(items=items, next_cursor=items[-1].id if more else None, unread_count=unread_count)

    @safe_to_repeat
    async def mark_read(self, notification_id: str, who: Principal) -> NotificationDocument:
        """Mark one of ``who``'s notifications read; one already read keeps its first ``read_at``.

        Raises:
          NotFound: absent or someone else's (indistinguishable on purpose).
        """
        query = {"_id": notification_id, **_owned_by(who)}
        await self.collection.update_one({**query, "read_at": None}, {"$set": {"read_at": utcnow()}})
        document = await self.collection.find_one(query)
        if document is None:
            raise NotFound(f"notification {notification_id} not found")
        return from_mongo(NotificationDocument, document)

    @run_once
    async def mark_all_read(self, who: Principal) -> int:
        """Mark every unread notification of ``who`` read; returns how many were. Run once: a repeat of an applied try
        would count none."""
        outcome = await self.collection.update_many(
            {**_owned_by(who), "read_at": None}, {"$set": {"read_at": utcnow()}}
        )
        return int(outcome.modified_count)

    @safe_to_repeat
    async def move_delivery(
        self, notification_id: str, channel: NotificationChannel, *, expected: DeliveryState, to: DeliveryState
    ) -> bool:
        """Move a channel's delivery from ``expected`` to ``to``; False if it was not ``expected`` any more (safe to
        repeat: a conditional move)."""
        key = f"deliveries.{channel}.state"
        outcome = await self.collection.update_one({"_id": notification_id, key: expected}, {"$set": {key: to}})
        return outcome.modified_count == 1

    @run_once
    async def record_attempt(
        self, notification_id: str, channel: NotificationChannel, attempt: DeliveryAttempt, state: DeliveryState
    ) -> NotificationDocument | None:
        """Append one delivery attempt and set the channel's state in the same write (run once: a repeat would append
        it twice)."""
        update = {
            "$push": {f"deliveries.{channel}.attempts": attempt.model_dump()},
            "$set": {f"deliveries.{channel}.state": state},
        }
        document = await self.collection.find_one_and_update(
            {"_id": notification_id}, update, return_document=ReturnDocument.AFTER
        )
        return None if document is None else from_mongo(NotificationDocument, document)
