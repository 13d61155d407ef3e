"""The ``outbox`` collection: one record per batch of jobs stored together whose broker messages are not known sent.

A batch's jobs are stored without their own outbox flag (``needs_dispatch``): clearing a thousand flags, one job
document each, cost SecantusDB as much as storing the jobs. The record is written before the jobs, named by the
``dispatch_token`` they all carry, and deleted once every message is sent; one the scheduler finds older than the
dispatch grace means its sender died or RabbitMQ was down, and the batch's jobs still queued with that token are sent
again (a duplicate message is harmless: workers run only ``queued`` jobs).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from pydantic import BaseModel

from engineroom.store.client import Database
from engineroom.store.errors import run_once, safe_to_repeat


class OutboxRecord(BaseModel):
    #: The ``dispatch_token`` of the batch's jobs.
    token: str
    job_ids: list[str]
    at: datetime


class OutboxStore:
    def __init__(self, db: Database) -> None:
        self.collection = db["outbox"]

    @run_once
    async def open(self, record: OutboxRecord) -> None:
        """Record a batch about to be stored (once: a repeat of an applied insert would meet its own key).

        Raises:
          StoreUnavailable: MongoDB failed; store none of the batch.
        """
        await self.collection.insert_one({"_id": record.token, "job_ids": record.job_ids, "at": record.at})

    @safe_to_repeat
    async def close(self, tokens: Collection[str]) -> None:
        """Forget batches whose every message was sent."""
        if tokens:
            await self.collection.delete_many({"_id": {"$in": list(tokens)}})

    @safe_to_repeat
    async def overdue(self, before: datetime, limit: int) -> list[OutboxRecord]:
        """Records opened before ``before``, oldest first (the ``outbox_age`` index: as many as there are batches in
        doubt, never the jobs)."""
        documents = await self.collection.find({"at": {"$lt": before}}).sort("at", 1).limit(limit).to_list(limit)
        return [
            OutboxRecord(token=document["_id"], job_ids=document["job_ids"], at=document["at"])
            for document in documents
        ]
