"""The ``jobs`` collection: every job write is a conditional write on the job's current state."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from pymongo import DESCENDING
from pymongo.errors import DuplicateKeyError, PyMongoError

from engineroom.core.clock import utcnow
from engineroom.core.errors import InvalidTransition, NotFound, StoreUnavailable
from engineroom.models.job import HistoryEntry, JobDocument, JobFilter, JobPage, JobPublic, JobState, Progress
from engineroom.models.principal import Principal
from engineroom.store.client import Database

#: Largest page ``list`` returns, whatever the caller asks.
MAX_PAGE_SIZE = 200


def _to_mongo(job: JobDocument) -> dict[str, Any]:
    document = job.model_dump(mode="python")
    document["_id"] = document.pop("id")
    return document


def _from_mongo(document: Mapping[str, Any]) -> JobDocument:
    fields = dict(document)
    fields["id"] = fields.pop("_id")
    return JobDocument.model_validate(fields)


def _visible_to(who: Principal) -> dict[str, Any]:
    """Users see their own jobs; admins see their tenant's. Nobody sees another tenant's."""
    if who.is_admin:
        return {"tenant_id": who.tenant_id}
    return {"tenant_id": who.tenant_id, "user_id": who.user_id}


def _filter_query(filters: JobFilter) -> dict[str, Any]:
    query: dict[str, Any] = {}
    for field in ("state", "engine", "task", "workflow_id"):
        value = getattr(filters, field)
        if value is not None:
            query[field] = str(value)
    if filters.tag is not None:
        query["tags"] = filters.tag
    created: dict[str, Any] = {}
    if filters.created_after is not None:
        created["$gt"] = filters.created_after
    if filters.created_before is not None:
        created["$lt"] = filters.created_before
    if created:
        query["created_at"] = created
    return query


class JobStore:
    """Reads and writes job documents. Methods return models, never cursors.

    Every pymongo failure leaves as ``StoreUnavailable`` so callers (and the gateway's 503) see one error.
    """

    def __init__(self, db: Database) -> None:
        self.collection = db["jobs"]

    async def insert(self, job: JobDocument) -> JobDocument:
        """Store a new job; with an idempotency key, return the job already stored under it instead.

        Raises:
          StoreUnavailable: MongoDB failed.
        """
        try:
            await self.collection.insert_one(_to_mongo(job))
            return job
        except DuplicateKeyError:
            existing = await self._find_one(
                {"tenant_id": job.tenant_id, "user_id": job.user_id, "idempotency_key": job.idempotency_key}
            )
            if existing is None:  # the key's holder was deleted between the two calls
                raise StoreUnavailable("idempotency conflict, retry the request") from None
            return existing
        except PyMongoError as exc:
            raise StoreUnavailable() from exc

    async def get(self, job_id: str) -> JobDocument | None:
        """The job, whoever owns it (for workers)."""
        return await self._find_one({"_id": job_id})

    async def get_visible(self, job_id: str, who: Principal) -> JobDocument:
        """The job if ``who`` may see it.

        Raises:
          NotFound: it does not exist or belongs to someone else (indistinguishable on purpose).
        """
        job = await self._find_one({"_id": job_id, **_visible_to(who)})
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job

    async def list_visible(
        self, who: Principal, filters: JobFilter, *, limit: int = 50, cursor: str | None = None
    ) -> JobPage:
        """A page of the jobs ``who`` may see, newest first, starting after ``cursor`` (a job id)."""
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        query = {**_visible_to(who), **_filter_query(filters)}
        if cursor is not None:
            query["_id"] = {"$lt": cursor}
        try:
            documents = await self.collection.find(query).sort("_id", DESCENDING).limit(limit + 1).to_list(limit + 1)
        except PyMongoError as exc:
            raise StoreUnavailable() from exc
        jobs = [JobPublic.from_document(_from_mongo(document)) for document in documents[:limit]]
        next_cursor = jobs[-1].id if len(documents) > limit else None
        return JobPage(items=jobs, next_cursor=next_cursor)

    async def delete(self, job_id: str) -> None:
        """Remove a job outright (used when it could not be enqueued and was never accepted)."""
        try:
            await self.collection.delete_one({"_id": job_id})
        except PyMongoError as exc:
            raise StoreUnavailable() from exc

    async def transition(
        self,
        job_id: str,
        *,
        expected: Collection[JobState],
        to: JobState,
        fields: Mapping[str, Any] | None = None,
        detail: str | None = None,
        increment_attempts: bool = False,
    ) -> None:
        """Move the job to ``to`` only if it is still in one of ``expected``, setting ``fields`` with it.

        Raises:
          InvalidTransition: the job is absent or in another state; nothing was written.
          StoreUnavailable: MongoDB failed.
        """
        now = utcnow()
        changes: dict[str, Any] = {"state": str(to), **(fields or {})}
        increments: dict[str, int] = {"version": 1}
        if increment_attempts:
            increments["attempts"] = 1
        update = {
            "$set": changes,
            "$inc": increments,
            "$push": {"history": HistoryEntry(state=to, at=now, detail=detail).model_dump(mode="python")},
        }
        query = {"_id": job_id, "state": {"$in": [str(state) for state in expected]}}
        try:
            outcome = await self.collection.update_one(query, update)
        except PyMongoError as exc:
            raise StoreUnavailable() from exc
        if outcome.matched_count != 1:
            states = ", ".join(sorted(str(state) for state in expected))
            raise InvalidTransition(f"job {job_id} is not in state {states}; cannot move it to {to}")

    async def set_progress(self, job_id: str, progress: Progress) -> bool:
        """Record progress while the job runs; returns False if it is no longer running."""
        try:
            outcome = await self.collection.update_one(
                {"_id": job_id, "state": str(JobState.RUNNING)},
                {"$set": {"progress": progress.model_dump(mode="python")}},
            )
        except PyMongoError as exc:
            raise StoreUnavailable() from exc
        return outcome.matched_count == 1

    async def _find_one(self, query: dict[str, Any]) -> JobDocument | None:
        try:
            document = await self.collection.find_one(query)
        except PyMongoError as exc:
            raise StoreUnavailable() from exc
        return None if document is None else _from_mongo(document)
