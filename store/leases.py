"""The ``leases`` collection: named, expiring locks (scheduler leadership now, concurrency slots later)."""

from __future__ import annotations

from datetime import timedelta

from pymongo.errors import DuplicateKeyError

from engineroom.core.clock import utcnow
from engineroom.store.client import Database
from engineroom.store.errors import safe_to_repeat


class LeaseStore:
    def __init__(self, db: Database) -> None:
        self.collection = db["leases"]

    @safe_to_repeat
    async def acquire(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease ``name`` for ``ttl_s`` seconds; False while another live holder has it.

        One conditional upsert: it matches only a lease that is ours or expired, so when another holder's lease
        is live the upsert collides on ``_id`` and we learn we are not the holder. Safe to repeat: once applied, the
        lease is ours, which the repeat matches.
        """
        now = utcnow()
        try:
            await self.collection.update_one(
                {"_id": name, "$or": [{"holder": holder}, {"expires_at": {"$lt": now}}]},
                {"$set": {"holder": holder, "expires_at": now + timedelta(seconds=ttl_s), "renewed_at": now}},
                upsert=True,
            )
        except DuplicateKeyError:
            return False
        return True

    @safe_to_repeat
    async def release(self, name: str, holder: str) -> None:
        """Give the lease up at once (on clean shutdown) so another holder need not wait for it to expire."""
        await self.collection.delete_one({"_id": name, "holder": holder})
