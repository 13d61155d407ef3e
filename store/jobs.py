"""The ``jobs`` collection: every job write is a conditional write on the job's current state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.errors import DuplicateKeyError, PyMongoError

from engineroom.core.clock import utcnow
from engineroom.core.errors import InvalidTransition, NotFound, StoreUnavailable
from engineroom.core.ids import id_floor, new_id
from engineroom.models.artifact import ArtifactRecord
from engineroom.models.job import (
    PRIORITIES_HIGHEST_FIRST,
    TERMINAL_STATES,
    HistoryEntry,
    JobDocument,
    JobError,
    JobFilter,
    JobPage,
    JobPublic,
    JobState,
    Progress,
)
from engineroom.models.principal import Principal
from engineroom.store.client import Database
from engineroom.store.documents import from_mongo, to_mongo
from engineroom.store.paging import newest_first
from engineroom.store.visibility import visible_to


def _values(states: Collection[JobState]) -> list[str]:
    return [str(state) for state in states]


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
            await self.collection.insert_one(to_mongo(job))
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

    async def insert_many(self, jobs: list[JobDocument]) -> None:
        """Store new jobs in one write (bulk writes are several times cheaper than one insert each).

        Raises:
          StoreUnavailable: MongoDB failed; none may be assumed stored.
        """
        if not jobs:
            return
        try:
            await self.collection.insert_many([to_mongo(job) for job in jobs], ordered=False)
        except PyMongoError as exc:
            raise StoreUnavailable() from exc

    async def missing_visible(self, job_ids: list[str], who: Principal) -> list[str]:
        """Which of ``job_ids`` ``who`` cannot see (absent or someone else's)."""
        try:
            found = await self.collection.find({"_id": {"$in": job_ids}, **visible_to(who)}, {"_id": 1}).to_list(None)
        except PyMongoError as exc:
            raise StoreUnavailable() from exc
        seen = {document["_id"] for document in found}
        return [job_id for job_id in job_ids if job_id not in seen]

    async def outcomes(self, job_ids: list[str]) -> list[JobDocument]:
        """The jobs with these ids (the dependencies of a pending job)."""
        try:
            documents = await self.collection.find({"_id": {"$in": job_ids}}).to_list(None)
        except PyMongoError as exc:
            raise StoreUnavailable() from exc
        return [from_mongo(JobDocument, document) for document in documents]

    async def due_scheduled(self, now: datetime, limit: int) -> list[JobDocument]:
        """``scheduled`` jobs whose time has come, earliest first."""
        query = {"state": str(JobState.SCHEDULED), "scheduled_at": {"$lte": now}}
        return await self._find_many(query, sort="scheduled_at", limit=limit)

    async def pending(self, limit: int, after: str | None = None) -> list[JobDocument]:
        """``pending`` jobs (waiting on dependencies), oldest first, from after the id ``after``."""
        query: dict[str, Any] = {"state": str(JobState.PENDING)}
        if after is not None:
            query["_id"] = {"$gt": after}
        return await self._find_many(query, sort="_id", limit=limit)

    async def get(self, job_id: str) -> JobDocument | None:
        """The job, whoever owns it (for workers)."""
        return await self._find_one({"_id": job_id})

    async def get_visible(self, job_id: str, who: Principal) -> JobDocument:
        """The job if ``who`` may see it.

        Raises:
          NotFound: it does not exist or belongs to someone else (indistinguishable on purpose).
        """
        job = await self._find_one({"_id": job_id, **visible_to(who)})
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job

    async def list_visible(
        self, who: Principal, filters: JobFilter, *, limit: int = 50, cursor: str | None = None
    ) -> JobPage:
        """A page of the jobs ``who`` may see, newest first, starting after ``cursor`` (a job id)."""
        query = {**visible_to(who), **_filter_query(filters)}
        documents, more = await newest_first(self.collection, query, limit=limit, cursor=cursor)
        jobs = [JobPublic.from_document(from_mongo(JobDocument, document)) for document in documents]
        return JobPage(items=jobs, next_cursor=jobs[-1].id if more else None)

    async def wait_until_finished(self, job_id: str, *, timeout_s: float) -> JobDocument:
        """The job once it has finished, or as it is when ``timeout_s`` runs out (polling, backing off to 0.5 s).

        Raises:
          NotFound: the job vanished meanwhile.
        """
        deadline = time.monotonic() + timeout_s
        pause_s = 0.02
        while True:
            job = await self.get(job_id)
            if job is None:
                raise NotFound(f"job {job_id} not found")
            remaining_s = deadline - time.monotonic()
            if job.is_terminal or remaining_s <= 0:
                return job
            await asyncio.sleep(min(pause_s, remaining_s))
            pause_s = min(pause_s * 2, 0.5)

    async def delete_terminal(self, job_id: str, who: Principal) -> None:
        """Delete a finished job that ``who`` may see.

        Raises:
          NotFound: absent or someone else's.
          InvalidTransition: the job has not finished.
        """
        job = await self.get_visible(job_id, who)
        try:
            outcome = await self.collection.delete_one({"_id": job_id, "state": {"$in": _values(TERMINAL_STATES)}})
        except PyMongoError as exc:
            raise StoreUnavailable() from exc
        if outcome.deleted_count != 1:
            raise InvalidTransition(f"job {job_id} is {job.state}; only finished jobs can be deleted")

    async def delete_finished(self, before: datetime, states: Collection[JobState], *, dry_run: bool) -> int:
        """Delete (or, with ``dry_run``, count) the jobs in ``states`` (terminal ones) finished before ``before``.

        Raises:
          StoreUnavailable: MongoDB failed.
        """
        total = 0
        for state in _values(states):  # one equality per query: SecantusDB plans no index for ``$in``
            query = {"state": state, "finished_at": {"$lt": before}}
            try:
                if dry_run:
                    total += await self.collection.count_documents(query)
                else:
                    total += (await self.collection.delete_many(query)).deleted_count
            except PyMongoError as exc:
                raise StoreUnavailable() from exc
        return total

    async def record_artifact(self, job_id: str, record: ArtifactRecord) -> None:
        """Add a saved file to the job's ``artifacts``, replacing the record of one saved earlier under its name.

        Not fenced on the job's state: its start may not be written yet (``actors/start_write.py``)."""
        await self._update_one({"_id": job_id}, {"$pull": {"artifacts": {"name": record.name}}})
        await self._update_one({"_id": job_id}, {"$push": {"artifacts": record.model_dump(mode="python")}})

    async def existing_ids(self, job_ids: list[str]) -> set[str]:
        """Which of ``job_ids`` are still stored (the artifact sweep deletes the files of the others)."""
        if not job_ids:
            return set()
        try:
            found = await self.collection.find({"_id": {"$in": job_ids}}, {"_id": 1}).to_list(None)
        except PyMongoError as exc:
            raise StoreUnavailable() from exc
        return {document["_id"] for document in found}

    async def renew_leases(self, job_ids: Collection[str], worker_id: str, until: datetime) -> None:
        """Extend the leases of the running jobs a live worker holds (its heartbeat)."""
        if not job_ids:
            return
        await self._update_many(
            {"_id": {"$in": list(job_ids)}, "state": str(JobState.RUNNING), "worker_id": worker_id},
            {"$set": {"lease_expires_at": until}},
        )

    async def confirm_dispatched(self, sent: Mapping[str, str | None]) -> None:
        """Clear the outbox flag of jobs whose broker messages were sent (job id → the ``dispatch_token`` sent)
        and that are still waiting for a worker; one write for many jobs. A flag set again since the send has a new
        token and stays. A job a worker claimed has its flag cleared by the claim: no second write."""
        if sent:
            query = {
                "_id": {"$in": list(sent)},
                "dispatch_token": {"$in": list(set(sent.values()))},
                "needs_dispatch": True,
                "state": str(JobState.QUEUED),
            }
            await self._update_many(query, {"$set": {"needs_dispatch": False}})

    async def park(self, job_id: str) -> bool:
        """Hold a ``queued`` job in MongoDB until its tenant has room under the engine's per-tenant cap (its
        message is consumed); False if it is no longer queued."""
        return await self._update_one(
            {"_id": job_id, "state": str(JobState.QUEUED)}, {"$set": {"parked": True, "needs_dispatch": False}}
        )

    async def unpark(self, job: JobDocument) -> JobDocument | None:
        """Mark a parked job for sending again (outbox flag set, with a new token); the job as it now is, or None
        if it was not parked and queued."""
        fields = {"parked": False, "needs_dispatch": True, "dispatch_token": new_id()}
        if await self._update_one({"_id": job.id, "state": str(JobState.QUEUED), "parked": True}, {"$set": fields}):
            return job.model_copy(update=fields)
        return None

    async def parked(self, engine: str, limit: int) -> list[JobDocument]:
        """An engine's parked jobs in the order they should start: highest priority, then oldest."""
        query = {"engine": engine, "state": str(JobState.QUEUED), "parked": True}
        try:
            cursor = self.collection.find(query).sort([("priority", DESCENDING), ("_id", 1)]).limit(limit)
            documents = await cursor.to_list(limit)
        except PyMongoError as exc:
            raise StoreUnavailable() from exc
        return [from_mongo(JobDocument, document) for document in documents]

    async def position(self, job: JobDocument) -> int:
        """How many queued jobs of the same engine start before this one (higher priority, or as high and older).

        Two counts rather than one ``$or``, so each is an index range.
        """
        same_engine = {"engine": job.engine, "state": str(JobState.QUEUED)}
        try:
            higher = await self.collection.count_documents({**same_engine, "priority": {"$gt": job.priority}})
            older = await self.collection.count_documents(
                {**same_engine, "priority": job.priority, "_id": {"$lt": job.id}}
            )
        except PyMongoError as exc:
            raise StoreUnavailable() from exc
        return int(higher) + int(older)

    async def due_retries(self, now: datetime, limit: int) -> list[JobDocument]:
        """``retrying`` jobs whose backoff is over, earliest first."""
        query = {"state": str(JobState.RETRYING), "next_attempt_at": {"$lte": now}}
        return await self._find_many(query, sort="next_attempt_at", limit=limit)

    async def expired_leases(self, now: datetime, limit: int) -> list[JobDocument]:
        """``running`` jobs whose worker stopped renewing their lease (it died or lost MongoDB)."""
        query = {"state": str(JobState.RUNNING), "lease_expires_at": {"$lt": now}}
        return await self._find_many(query, sort="lease_expires_at", limit=limit)

    async def undispatched(self, queued_before: datetime, limit: int) -> list[JobDocument]:
        """``queued`` jobs whose broker message may never have been sent (the outbox)."""
        query = {"needs_dispatch": True, "state": str(JobState.QUEUED), "queued_at": {"$lt": queued_before}}
        return await self._find_many(query, sort="queued_at", limit=limit)

    async def expected_in_broker(self, engine: str, priority: int, after: str | None, limit: int) -> list[JobDocument]:
        """A batch of the engine's ``queued`` jobs of one ``priority`` whose message should be in RabbitMQ (parked jobs
        wait in MongoDB, on purpose without one), oldest first, from after the id ``after``. Walked over priorities,
        highest first, the batches come in the order the jobs should start; each is one index range."""
        query: dict[str, Any] = {"engine": engine, "state": str(JobState.QUEUED), "parked": False, "priority": priority}
        if after is not None:
            query["_id"] = {"$gt": after}
        return await self._find_many(query, sort="_id", limit=limit)

    async def count_expected_in_broker(self, engine: str) -> int:
        """How many of the engine's ``queued`` jobs should have a message in RabbitMQ (all but the parked ones)."""
        try:
            return int(
                await self.collection.count_documents(
                    {"engine": engine, "state": str(JobState.QUEUED), "parked": False}
                )
            )
        except PyMongoError as exc:
            raise StoreUnavailable() from exc

    async def has_overdue_in_broker(self, engine: str, queued_before: datetime, limit: int) -> bool:
        """Whether one of the engine's ``queued`` jobs that should have a message in RabbitMQ was queued before
        ``queued_before``, judged from at most ``limit`` per priority of those made before then, unsorted.

        A job is queued after it is made, so "made before" (a range on its time-sortable id) is a superset that the
        ``parked`` index covers, one priority at a time (SecantusDB plans an index for a prefix of its fields, and
        none for ``$in``): no index of its own, which every job write would have to maintain.
        """
        expected = {"engine": engine, "state": str(JobState.QUEUED), "parked": False}
        if not await self._exists(expected):  # an idle engine: one query
            return False
        made_before = {"$lt": id_floor(queued_before)}
        for priority in PRIORITIES_HIGHEST_FIRST:
            query = {**expected, "priority": priority, "_id": made_before}
            try:
                found = await self.collection.find(query, {"queued_at": 1}).limit(limit).to_list(limit)
            except PyMongoError as exc:
                raise StoreUnavailable() from exc
            if any(
                document.get("queued_at") is not None and document["queued_at"] < queued_before for document in found
            ):
                return True
        return False

    async def transition(
        self,
        job_id: str,
        *,
        expected: Collection[JobState],
        to: JobState,
        fields: Mapping[str, Any] | None = None,
        detail: str | None = None,
        error: JobError | None = None,
        increment_attempts: bool = False,
        extra_conditions: Mapping[str, Any] | None = None,
        passed_through: HistoryEntry | None = None,
    ) -> None:
        """Move the job to ``to`` only if it is still in one of ``expected`` (and matches ``extra_conditions``),
        setting ``fields`` and appending a history entry in the same write — after ``passed_through``, the entry
        of a state the job went through on the way when one write records both (a short job: queued → running →
        completed).

        Raises:
          InvalidTransition: the job is absent or in another state; nothing was written.
          StoreUnavailable: MongoDB failed.
        """
        now = utcnow()
        changes: dict[str, Any] = {"state": str(to), **(fields or {})}
        increments: dict[str, int] = {"version": 1}
        if increment_attempts:
            increments["attempts"] = 1
        entries = [] if passed_through is None else [passed_through]
        entries.append(HistoryEntry(state=to, at=now, detail=detail, error=error))
        update = {
            "$set": changes,
            "$inc": increments,
            "$push": {"history": {"$each": [entry.model_dump(mode="python") for entry in entries]}},
        }
        states = _values(expected)
        # One expected state (nearly every transition) as an equality: SecantusDB's planner takes a third less time
        # over ``_id`` plus an equality than over ``_id`` plus a one-element ``$in``.
        state: str | dict[str, list[str]] = states[0] if len(states) == 1 else {"$in": states}
        query = {"_id": job_id, "state": state, **(extra_conditions or {})}
        try:
            outcome = await self.collection.update_one(query, update)
        except PyMongoError as exc:
            raise StoreUnavailable() from exc
        if outcome.matched_count != 1:
            raise InvalidTransition(f"job {job_id} is not in state {', '.join(sorted(states))}; cannot move it to {to}")

    async def set_progress(self, job_id: str, progress: Progress, worker_id: str) -> bool:
        """Record progress while ``worker_id`` runs the job; returns False if it no longer does."""
        try:
            outcome = await self.collection.update_one(
                {"_id": job_id, "state": str(JobState.RUNNING), "worker_id": worker_id},
                {"$set": {"progress": progress.model_dump(mode="python")}},
            )
        except PyMongoError as exc:
            raise StoreUnavailable() from exc
        return outcome.matched_count == 1

    async def _find_many(self, query: dict[str, Any], *, sort: str, limit: int) -> list[JobDocument]:
        try:
            documents = await self.collection.find(query).sort(sort, 1).limit(limit).to_list(limit)
        except PyMongoError as exc:
            raise StoreUnavailable() from exc
        return [from_mongo(JobDocument, document) for document in documents]

    async def _exists(self, query: dict[str, Any]) -> bool:
        try:
            return await self.collection.find_one(query, {"_id": 1}) is not None
        except PyMongoError as exc:
            raise StoreUnavailable() from exc

    async def _update_one(self, query: dict[str, Any], update: dict[str, Any]) -> bool:
        try:
            outcome = await self.collection.update_one(query, update)
        except PyMongoError as exc:
            raise StoreUnavailable() from exc
        return outcome.matched_count == 1

    async def _update_many(self, query: dict[str, Any], update: dict[str, Any]) -> None:
        try:
            await self.collection.update_many(query, update)
        except PyMongoError as exc:
            raise StoreUnavailable() from exc

    async def _find_one(self, query: dict[str, Any]) -> JobDocument | None:
        try:
            document = await self.collection.find_one(query)
        except PyMongoError as exc:
            raise StoreUnavailable() from exc
        return None if document is None else from_mongo(JobDocument, document)
