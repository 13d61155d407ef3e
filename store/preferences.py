"""The ``notification_preferences`` collection: one document per user, with the secret their webhooks are signed
with."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from engineroom.core.clock import utcnow
from engineroom.models.notification import NotificationChannel, NotificationPreferences, PreferencesDocument
from engineroom.store.client import Database
from engineroom.store.errors import safe_to_repeat

#: Bytes of randomness in a webhook signing secret (hex-encoded: twice as many characters).
WEBHOOK_SECRET_BYTES = 32
#: Upserts retried after losing a race to create the same user's document (the unique index refuses one).
UPSERT_ATTEMPTS = 3


def new_webhook_secret() -> str:
    return secrets.token_hex(WEBHOOK_SECRET_BYTES)


class PreferenceStore:
    """Reads and writes notification preferences. pymongo failures leave as ``StoreUnavailable``."""

    def __init__(self, db: Database) -> None:
        self.collection = db["notification_preferences"]

    async def get(self, tenant_id: str, user_id: str) -> NotificationPreferences:
        """The user's preferences, or the defaults (websocket on for every event, the rest off) if never set;
        reading creates nothing."""
        document = await self._find(tenant_id, user_id)
        return NotificationPreferences() if document is None else document

    @safe_to_repeat
    async def enabled_types(self, event_types: Iterable[str]) -> frozenset[str]:
        """Which of ``event_types`` at least one stored preference enables on a channel that is on.

        One indexed ``find_one`` per type and channel, sent together: the cost grows with the types asked about,
        not with the users.

        Raises:
          StoreUnavailable: MongoDB failed.
        """
        probes = [(kind, channel) for kind in sorted(set(event_types)) for channel in NotificationChannel]
        found = await asyncio.gather(
            *(
                self.collection.find_one({f"{channel}.events": kind, f"{channel}.enabled": True}, {"_id": 1})
                for kind, channel in probes
            ),
            return_exceptions=True,
        )
        for outcome in found:  # every probe has ended: the first failure leaves
            if isinstance(outcome, BaseException):
                raise outcome
        return frozenset(kind for (kind, _), document in zip(probes, found, strict=True) if document is not None)

    @safe_to_repeat
    async def get_or_create(self, tenant_id: str, user_id: str) -> PreferencesDocument:
        """The user's stored preferences, stored with the defaults and a fresh webhook secret if there were none."""
        return await self._upsert(tenant_id, user_id, None)

    @safe_to_repeat
    async def put(self, tenant_id: str, user_id: str, preferences: NotificationPreferences) -> PreferencesDocument:
        """Replace the user's preferences; the webhook secret stays (or is made, the first time). Safe to repeat, as
        ``get_or_create``: an upsert of given values (the secret only on insert)."""
        return await self._upsert(tenant_id, user_id, preferences)

    @safe_to_repeat
    async def _find(self, tenant_id: str, user_id: str) -> PreferencesDocument | None:
        document = await self.collection.find_one({"tenant_id": tenant_id, "user_id": user_id})
        return None if document is None else _from_mongo(document)

    async def _upsert(
        self, tenant_id: str, user_id: str, preferences: NotificationPreferences | None
    ) -> PreferencesDocument:
        query = {"tenant_id": tenant_id, "user_id": user_id}
        chosen = (preferences or NotificationPreferences()).model_dump(mode="json")
        update: dict[str, Any] = {"$setOnInsert": {"webhook_secret": new_webhook_secret()}}
        if preferences is None:
            update["$setOnInsert"] |= {**chosen, "updated_at": utcnow()}
        else:
            update["$set"] = {**chosen, "updated_at": utcnow()}
        for _ in range(UPSERT_ATTEMPTS - 1):
            try:
                return await self._find_one_and_upsert(query, update)
            except DuplicateKeyError:
                continue  # another request created it first: it exists now, so the next try updates it
        return await self._find_one_and_upsert(query, update)

    async def _find_one_and_upsert(self, query: dict[str, Any], update: dict[str, Any]) -> PreferencesDocument:
        document = await self.collection.find_one_and_update(
            query, update, upsert=True, return_document=ReturnDocument.AFTER
        )
        return _from_mongo(document)


def _from_mongo(document: dict[str, Any]) -> PreferencesDocument:
    return PreferencesDocument.model_validate({key: value for key, value in document.items() if key != "_id"})
