"""Submit counters per user and per tenant, shared by every gateway: one document per key and window."""

from __future__ import annotations

from datetime import datetime

from pymongo import ReturnDocument

from engineroom.store.client import Database
from engineroom.store.errors import run_once


class RateCounters:
    def __init__(self, db: Database) -> None:
        self.collection = db["rate_limits"]

    @run_once
    async def add(self, key: str, amount: int, *, window_start: datetime, expires_at: datetime) -> int:
        """Add ``amount`` to ``key``'s count in the window starting at ``window_start``; the new count.

        One atomic upsert, so concurrent gateways never lose an increment. Documents expire (TTL) after their
        window. Run once: a repeat of an applied try would count twice.

        Raises:
          StoreUnavailable: MongoDB failed.
        """
        counter = await self.collection.find_one_and_update(
            {"_id": f"{key}@{window_start.isoformat()}"},
            {"$inc": {"count": amount}, "$setOnInsert": {"expires_at": expires_at}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        return int(counter["count"])
