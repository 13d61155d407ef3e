"""The ``jobs`` collection: every job write is a conditional write on the job's current state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic_core import to_jsonable_python
from pymongo import DESCENDING, UpdateMany, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from engineroom.core.clock import utcnow
from engineroom.core.errors import InvalidTransition, NotFound, StoreUnavailable
from engineroom.core.ids import id_floor, new_id
from engineroom.models.artifact import ArtifactRecord
from engineroom.models.event import Event
from engineroom.models.job import (
    PRIORITIES_HIGHEST_FIRST,
    TERMINAL_STATES,
    AttemptState,
    HistoryEntry,
    JobDocument,
    JobError,
    JobFilter,
    JobPage,
    JobPublic,
    JobStart,
    JobState,
    Progress,
    RunningAttempt,
    Usage,
)
from engineroom.models.principal import Principal
from engineroom.store.client import Database, journaled
from engineroom.store.documents import from_mongo, to_mongo
from engineroom.store.errors import run_once, safe_to_repeat
from engineroom.store.grouped import Grouped
from engineroom.store.paging import newest_first
from engineroom.store.visibility import visible_to

#: Every field a job document has: a write names no other (``_move`` checks).
_JOB_FIELDS = frozenset(JobDocument.model_fields)
#: How many times an insert meets an idempotency key whose holder vanishes before it is read, before it gives up.
_INSERT_TRIES = 2
#: Ids per ``$in`` of the queries and writes that name many jobs (``JobStore.confirm_dispatched``, ``_by_ids``).
CONFIRM_CHUNK = 50


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
    """Reads and writes job documents. Methods return models, never cursors, and are named for what they do to a job;
    each write states the conditions it depends on (the job's state, and the fences below).

    Every pymongo failure leaves as ``StoreUnavailable`` (``store/errors.py``) so callers (and the gateway's 503) see
    one error.
    """

    def __init__(self, db: Database) -> None:
        self.collection = db["jobs"]
        self._accepting = journaled(db, "jobs")
        self._reads: Grouped[str, JobDocument | None] = Grouped(self._read_group, most=CONFIRM_CHUNK)
        self._outcomes: Grouped[_Ending, None] = Grouped(self._end_group, most=CONFIRM_CHUNK)

    # -- new jobs --

    @safe_to_repeat
    async def insert(self, job: JobDocument) -> JobDocument:
        """Store a new job; with an idempotency key, return the job already stored under it instead.

        Safe to repeat: a duplicate key on the job's own id (new and random) can only be an earlier try of this
        insert; one on its idempotency key finds the job stored under the key, this very one if that try stored it.

        Raises:
          StoreUnavailable: MongoDB failed, or the key's holder vanished each time before it could be read.
        """
        contested: DuplicateKeyError | None = None
        for _ in range(_INSERT_TRIES):
            try:
                await self._accepting.insert_one(to_mongo(job))
                return job
            except DuplicateKeyError as exc:
                if job.idempotency_key is None:
                    return job  # its own id: stored by an earlier try
                existing = await self._find_one(
                    {"tenant_id": job.tenant_id, "user_id": job.user_id, "idempotency_key": job.idempotency_key}
                )
                if existing is not None:
                    return existing
                contested = exc  # the key's holder was deleted between the two calls: the key is free again
        raise contested or AssertionError("no try was made")

    @run_once
    async def insert_many(self, jobs: list[JobDocument]) -> None:
        """Store new jobs in one write (bulk writes are several times cheaper than one insert each).

        Run once: a repeat of a partly applied try would meet its own jobs as duplicates.

        Raises:
          StoreUnavailable: MongoDB failed; none may be assumed stored.
        """
        if jobs:
            await self._accepting.insert_many([to_mongo(job) for job in jobs], ordered=False)

    # -- reads --

    @safe_to_repeat
    async def missing_visible(self, job_ids: list[str], who: Principal) -> list[str]:
        """Which of ``job_ids`` ``who`` cannot see (absent or someone else's)."""
        found = await self.collection.find({"_id": {"$in": job_ids}, **visible_to(who)}, {"_id": 1}).to_list(None)
        seen = {document["_id"] for document in found}
        return [job_id for job_id in job_ids if job_id not in seen]

    @safe_to_repeat
    async def outcomes(self, job_ids: list[str]) -> list[JobDocument]:
        """The jobs with these ids (the dependencies of a pending job, a workflow's steps)."""
        return await self._by_ids(job_ids, {})

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
        """The job, whoever owns it (for workers: the reads of jobs starting together go in one ``find``)."""
        return await self._reads(job_id)

    @safe_to_repeat
    async def _read_group(self, job_ids: list[str]) -> list[JobDocument | None]:
        if len(job_ids) == 1:
            document = await self.collection.find_one({"_id": job_ids[0]})
            return [None if document is None else from_mongo(JobDocument, document)]
        documents = await self.collection.find({"_id": {"$in": sorted(set(job_ids))}}).to_list(None)
        found = {document["_id"]: from_mongo(JobDocument, document) for document in documents}
        return [found.get(job_id) for job_id in job_ids]

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

    # -- deleting finished jobs --

    async def delete_terminal(self, job_id: str, who: Principal) -> None:
        """Delete a finished job that ``who`` may see.

        Raises:
          NotFound: absent or someone else's.
          InvalidTransition: the job has not finished.
        """
        job = await self.get_visible(job_id, who)
        if not await self._delete_if_finished(job_id):
            raise InvalidTransition(f"job {job_id} is {job.state}; only finished jobs can be deleted")

    @run_once
    async def _delete_if_finished(self, job_id: str) -> bool:
        """Run once: a repeat of an applied try would find nothing to delete and say the job is not finished."""
        outcome = await self.collection.delete_one({"_id": job_id, "state": {"$in": _values(TERMINAL_STATES)}})
        return bool(outcome.deleted_count == 1)

    @run_once
    async def delete_finished(self, before: datetime, states: Collection[JobState], *, dry_run: bool) -> int:
        """Delete (or, with ``dry_run``, count) the jobs in ``states`` (terminal ones) finished before ``before``.

        Run once: a repeat would leave out what an applied try deleted from the count it reports.

        Raises:
          StoreUnavailable: MongoDB failed.
        """
        total = 0
        for state in _values(states):  # one equality per query: SecantusDB plans no index for ``$in``
            # finished_at first: where no index covers both (SecantusDB's minimal set), the retention index serves
            # the first clause, the jobs finished before ``before``.
            query = {"finished_at": {"$lt": before}, "state": state}
            if dry_run:
                total += await self.collection.count_documents(query)
            else:
                total += (await self.collection.delete_many(query)).deleted_count
        return total

    async def record_artifact(self, job_id: str, record: ArtifactRecord) -> None:
        """Add a saved file to the job's ``artifacts``, replacing the record of one saved earlier under its name.

        Not fenced on the job's state: its start may not be written yet (``actors/start_write.py``)."""
        await self._update_one({"_id": job_id}, {"$pull": {"artifacts": {"name": record.name}}})
        await self._update_one({"_id": job_id}, {"$push": {"artifacts": record.model_dump(mode="python")}})

    @safe_to_repeat
    async def existing_ids(self, job_ids: list[str]) -> set[str]:
        """Which of ``job_ids`` are still stored (the artifact sweep deletes the files of the others)."""
        if not job_ids:
            return set()
        found = await self.collection.find({"_id": {"$in": job_ids}}, {"_id": 1}).to_list(None)
        return {document["_id"] for document in found}

    # -- the outbox and parking --

    @safe_to_repeat
    async def renew_leases(self, job_ids: Collection[str], worker_id: str, until: datetime) -> None:
        """Extend the leases of the running jobs a live worker holds (its heartbeat)."""
        if job_ids:
            await self.collection.update_many(
                {"_id": {"$in": list(job_ids)}, "state": str(JobState.RUNNING), "worker_id": worker_id},
                {"$set": {"lease_expires_at": until}},
            )

    @safe_to_repeat
    async def confirm_dispatched(self, sent: Mapping[str, str | None]) -> None:
        """Clear the outbox flag of jobs whose broker messages were sent (job id → the ``dispatch_token`` sent)
        and that are still waiting for a worker; one write for many jobs. A flag set again since the send has a new
        token and stays. A job a worker claimed has its flag cleared by the claim: no second write.

        The ids go in chunks of ``CONFIRM_CHUNK``, each its own statement of one bulk write: SecantusDB matches every
        job it looks up against the whole ``$in`` lists of its statement, so one statement for a 1,000-job batch
        cost ~3 s of its CPU (a million comparisons), the chunks ~0.3 s.
        """
        if not sent:
            return
        ids = list(sent)
        statements = []
        for start in range(0, len(ids), CONFIRM_CHUNK):
            chunk = ids[start : start + CONFIRM_CHUNK]
            query = {
                "_id": {"$in": chunk},
                "dispatch_token": {"$in": list({sent[job_id] for job_id in chunk})},
                "needs_dispatch": True,
                "state": str(JobState.QUEUED),
            }
            statements.append(UpdateMany(query, {"$set": {"needs_dispatch": False}}))
        await self.collection.bulk_write(statements, ordered=False)

    async def unsent_of_batch(self, job_ids: list[str], token: str) -> list[JobDocument]:
        """The jobs of an outbox record (``store.outbox``) still waiting for the message it stands for, in its order:
        ``queued`` with its ``dispatch_token`` (a job parked, retried or sent on since carries another)."""
        found = await self._by_ids(job_ids, {"dispatch_token": token, "state": str(JobState.QUEUED)})
        order = {job_id: index for index, job_id in enumerate(job_ids)}
        return sorted(found, key=lambda job: order[job.id])

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

    @safe_to_repeat
    async def parked(self, engine: str, limit: int) -> list[JobDocument]:
        """An engine's parked jobs in the order they should start: highest priority, then oldest."""
        query = {"engine": engine, "state": str(JobState.QUEUED), "parked": True}
        cursor = self.collection.find(query).sort([("priority", DESCENDING), ("_id", 1)]).limit(limit)
        return [from_mongo(JobDocument, document) for document in await cursor.to_list(limit)]

    @safe_to_repeat
    async def position(self, job: JobDocument) -> int:
        """How many queued jobs of the same engine start before this one (higher priority, or as high and older).

        Two counts for parked jobs and two for the others rather than one ``$or``, so each is a range of the
        ``parked`` index (an index of its own would cost every job write).
        """
        total = 0
        for parked in (False, True):
            same_engine = {"engine": job.engine, "state": str(JobState.QUEUED), "parked": parked}
            total += await self.collection.count_documents({**same_engine, "priority": {"$gt": job.priority}})
            total += await self.collection.count_documents(
                {**same_engine, "priority": job.priority, "_id": {"$lt": job.id}}
            )
        return int(total)

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

    @safe_to_repeat
    async def count_expected_in_broker(self, engine: str) -> int:
        """How many of the engine's ``queued`` jobs should have a message in RabbitMQ (all but the parked ones)."""
        query = {"engine": engine, "state": str(JobState.QUEUED), "parked": False}
        return int(await self.collection.count_documents(query))

    @safe_to_repeat
    async def has_overdue_in_broker(self, engine: str, queued_before: datetime, limit: int) -> bool:
        """Whether one of the engine's ``queued`` jobs that should have a message in RabbitMQ was queued before
        ``queued_before``, judged from at most ``limit`` per priority of those made before then, unsorted.

        A job is queued after it is made, so "made before" (a range on its time-sortable id) is a superset that the
        ``parked`` index covers, one priority at a time (SecantusDB plans an index for a prefix of its fields, and
        none for ``$in``): no index of its own, which every job write would have to maintain.
        """
        expected = {"engine": engine, "state": str(JobState.QUEUED), "parked": False}
        if await self.collection.find_one(expected, {"_id": 1}) is None:  # an idle engine: one query
            return False
        made_before = {"$lt": id_floor(queued_before)}
        for priority in PRIORITIES_HIGHEST_FIRST:
            query = {**expected, "priority": priority, "_id": made_before}
            found = await self.collection.find(query, {"queued_at": 1}).limit(limit).to_list(limit)
            if any(
                document.get("queued_at") is not None and document["queued_at"] < queued_before for document in found
            ):
                return True
        return False

    # -- a worker's attempt --

    async def mark_running(self, job_id: str, start: JobStart) -> None:
        """Record a worker's start of the queued job, written on its own while the task runs.

        Raises:
          InvalidTransition: the job is no longer queued (cancelled meanwhile); nothing was written.
        """
        await self._apply(
            _move(
                job_id,
                expected=[JobState.QUEUED],
                to=JobState.RUNNING,
                fields=start.changes(),
                detail=start.detail,
                increment_attempts=True,
            )
        )

    async def complete(
        self, job_id: str, *, attempt: AttemptState, result: Any, usage: Usage, finished_at: datetime, outcome: Event
    ) -> None:
        """Record that the attempt finished with ``result``, with ``outcome`` (its ``job.completed`` event) stored
        alongside, so the very same event can be published again if the worker dies before it does.

        Raises:
          InvalidTransition: the job moved on (cancelled, or taken from this attempt); nothing was written.
        """
        done = Progress(percent=100.0, message="done")
        fields = {"result": result, **_spent(usage, done), **_ended(finished_at, outcome)}
        await self._end_attempt(job_id, JobState.COMPLETED, attempt, fields)

    async def fail(
        self,
        job_id: str,
        *,
        attempt: AttemptState,
        error: JobError,
        finished_at: datetime,
        outcome: Event,
        usage: Usage | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Record that the attempt (or a job that could not start: ``attempt`` None) failed for good, with
        ``outcome`` (its ``job.failed`` event) as ``complete`` does; ``progress``, if given, is the last reported.

        Raises:
          InvalidTransition: the job moved on; nothing was written.
        """
        fields = {"error": error.model_dump(), **_spent(usage, progress), **_ended(finished_at, outcome)}
        await self._end_attempt(job_id, JobState.FAILED, attempt, fields, error=error)

    async def schedule_retry(
        self,
        job_id: str,
        *,
        attempt: AttemptState,
        error: JobError,
        retry_at: datetime,
        detail: str,
        usage: Usage,
        progress: Progress | None = None,
    ) -> None:
        """Record that the attempt failed transiently: the job waits ``retrying`` until ``retry_at``, held by no
        worker.

        Raises:
          InvalidTransition: the job moved on; nothing was written.
        """
        fields = {
            "error": error.model_dump(),
            **_spent(usage, progress),
            "next_attempt_at": retry_at,
            "worker_id": None,
            "lease_expires_at": None,
        }
        await self._end_attempt(job_id, JobState.RETRYING, attempt, fields, detail=detail, error=error)

    async def set_progress(self, job_id: str, progress: Progress, worker_id: str) -> bool:
        """Record progress while ``worker_id`` runs the job; returns False if it no longer does."""
        return await self._update_one(
            {"_id": job_id, "state": str(JobState.RUNNING), "worker_id": worker_id},
            {"$set": {"progress": progress.model_dump(mode="python")}},
        )

    # -- the scheduler's and users' moves --

    async def requeue(
        self, job: JobDocument, *, source: JobState, detail: str, inputs: Mapping[str, object] | None = None
    ) -> JobDocument:
        """Queue the job again from ``source`` (due, backoff over, dependencies met with their ``inputs``, or its
        worker lost), flagged for sending; the job as it now is. A ``running`` job is taken only while its lease is
        still the lapsed one read (a worker that came back renewed it, and keeps the job).

        Raises:
          InvalidTransition: it moved on meanwhile; nothing was written.
        """
        fields: dict[str, Any] = {
            "queued_at": utcnow(),
            "needs_dispatch": True,
            "dispatch_token": new_id(),
            "next_attempt_at": None,
            "worker_id": None,
            "lease_expires_at": None,
        }
        if inputs is not None:
            fields["inputs"] = to_jsonable_python(inputs)
        lease = {"lease_expires_at": job.lease_expires_at} if source == JobState.RUNNING else {}
        await self._apply(
            _move(job.id, expected=[source], to=JobState.QUEUED, fields=fields, detail=detail, conditions=lease)
        )
        return job.model_copy(update={"state": JobState.QUEUED, **fields})

    async def fail_lost(self, job_id: str, *, error: JobError, detail: str) -> None:
        """Fail a running job whose worker is gone and that has no attempts left.

        Raises:
          InvalidTransition: it is no longer running; nothing was written.
        """
        fields = {"error": error.model_dump(), "finished_at": utcnow(), "lease_expires_at": None}
        await self._apply(
            _move(job_id, expected=[JobState.RUNNING], to=JobState.FAILED, fields=fields, detail=detail, error=error)
        )

    async def cancel(self, job_id: str, *, expected: Collection[JobState], detail: str) -> None:
        """Cancel the job if it is in one of ``expected`` (unfinished states); it is sent nowhere any more.

        Raises:
          InvalidTransition: it is in another state; nothing was written.
        """
        fields = {"finished_at": utcnow(), "needs_dispatch": False, "lease_expires_at": None, "next_attempt_at": None}
        await self._apply(_move(job_id, expected=expected, to=JobState.CANCELLED, fields=fields, detail=detail))

    async def retry(self, job: JobDocument, *, expected: Collection[JobState], detail: str) -> None:
        """Queue a finished ``job`` (in one of ``expected``) again by hand, flagged for sending: its history and
        attempts kept, its result and progress cleared, a fresh budget of automatic retries.

        Raises:
          InvalidTransition: it is in another state; nothing was written.
        """
        fields = {
            "queued_at": utcnow(),
            "finished_at": None,
            "result": None,
            "progress": Progress().model_dump(),
            "needs_dispatch": True,
            "dispatch_token": new_id(),
            # attempts keep counting across manual retries; the budget of automatic retries starts afresh
            "attempts_before_retry": job.attempts,
        }
        await self._apply(_move(job.id, expected=expected, to=JobState.QUEUED, fields=fields, detail=detail))

    # -- the one conditional write every move is --

    async def _end_attempt(
        self,
        job_id: str,
        to: JobState,
        attempt: AttemptState,
        fields: dict[str, Any],
        *,
        detail: str | None = None,
        error: JobError | None = None,
    ) -> None:
        how: dict[str, Any] = {"to": to, "detail": detail, "error": error}
        if isinstance(attempt, RunningAttempt):
            fence = {"worker_id": attempt.worker_id, "attempts": attempt.attempts}
            move = _move(job_id, expected=[JobState.RUNNING], fields=fields, conditions=fence, **how)
        elif isinstance(attempt, JobStart):  # the start is written with the outcome: queued → running → ``to``
            move = _move(
                job_id,
                expected=[JobState.QUEUED],
                fields={**attempt.changes(), **fields},
                passed_through=attempt.entry(),
                increment_attempts=True,
                **how,
            )
        else:
            move = _move(job_id, expected=[JobState.QUEUED], fields=fields, **how)
        outcome = fields.get("outcome_event")
        if outcome is not None:  # an outcome: concurrent jobs' go together, and the event's id tells if it landed
            await self._outcomes(_Ending(move, outcome["id"]))
        else:
            await self._apply(move)

    @safe_to_repeat
    async def _apply(self, move: _Move) -> None:
        """Safe to repeat: once applied, the state condition no longer matches (see ``store/errors.py``)."""
        if (await self.collection.update_one(move.query, move.update)).matched_count != 1:
            raise move.refused()

    @safe_to_repeat
    async def _end_group(self, endings: list[_Ending]) -> list[None | BaseException]:
        """The outcomes of several jobs in one ``bulk_write``. Safe to repeat: an outcome applied by an earlier try no
        longer matches, and the read below finds its event id stored.

        ``bulk_write`` counts the statements that matched, not which: where fewer did than were sent, one read of
        the jobs' stored outcome event ids tells which landed (only those with this write's id did).
        """
        failed: dict[int, BaseException] = {}
        try:
            if len(endings) == 1:  # alone: a plain update
                move = endings[0].move
                matched = (await self.collection.update_one(move.query, move.update)).matched_count
            else:
                statements = [UpdateOne(ending.move.query, ending.move.update) for ending in endings]
                matched = (await self.collection.bulk_write(statements, ordered=False)).matched_count
        except BulkWriteError as exc:
            matched = exc.details.get("nMatched", 0)
            failed = {error["index"]: _refusal(exc) for error in exc.details.get("writeErrors", [])}
        if matched == len(endings):
            return [None] * len(endings)
        ids = [ending.move.job_id for ending in endings]
        stored = await self.collection.find({"_id": {"$in": ids}}, {"outcome_event.id": 1}).to_list(None)
        landed = {document["_id"]: (document.get("outcome_event") or {}).get("id") for document in stored}
        return [
            failed.get(index) or (None if landed.get(ending.move.job_id) == ending.event_id else ending.move.refused())
            for index, ending in enumerate(endings)
        ]

    @safe_to_repeat
    async def _by_ids(self, job_ids: list[str], conditions: dict[str, Any]) -> list[JobDocument]:
        """The jobs with these ids that meet ``conditions``, in chunks of ``CONFIRM_CHUNK`` ids: SecantusDB matches
        each job it looks up against the whole ``$in`` list (a workflow of 1,000 steps: a million comparisons)."""
        found: list[JobDocument] = []
        for start in range(0, len(job_ids), CONFIRM_CHUNK):
            query = {"_id": {"$in": job_ids[start : start + CONFIRM_CHUNK]}, **conditions}
            documents = await self.collection.find(query).to_list(None)
            found.extend(from_mongo(JobDocument, document) for document in documents)
        return found

    @safe_to_repeat
    async def _find_many(self, query: dict[str, Any], *, sort: str, limit: int) -> list[JobDocument]:
        documents = await self.collection.find(query).sort(sort, 1).limit(limit).to_list(limit)
        return [from_mongo(JobDocument, document) for document in documents]

    @safe_to_repeat
    async def _find_one(self, query: dict[str, Any]) -> JobDocument | None:
        document = await self.collection.find_one(query)
        return None if document is None else from_mongo(JobDocument, document)

    @safe_to_repeat
    async def _update_one(self, query: dict[str, Any], update: dict[str, Any]) -> bool:
        """A ``$set`` whose condition still holds once applied (a repeat answers the same)."""
        return bool((await self.collection.update_one(query, update)).matched_count == 1)


def _spent(usage: Usage | None, progress: Progress | None) -> dict[str, Any]:
    """What an attempt used, and its last progress (each if known)."""
    spent: dict[str, Any] = {}
    if usage is not None:
        spent["usage"] = usage.model_dump()
    if progress is not None:
        spent["progress"] = progress.model_dump()
    return spent


def _ended(finished_at: datetime, outcome: Event) -> dict[str, Any]:
    """A finished job: when, no lease any more, and its outcome event's id and time, to publish the same again."""
    return {"finished_at": finished_at, "lease_expires_at": None, "outcome_event": {"id": outcome.id, "ts": outcome.ts}}


@dataclass(frozen=True)
class _Move:
    """One conditional state transition: its filter, its update, and what a refusal says."""

    job_id: str
    query: dict[str, Any]
    update: dict[str, Any]
    description: str

    def refused(self) -> InvalidTransition:
        return InvalidTransition(self.description)


@dataclass(frozen=True)
class _Ending:
    """A job's outcome write, known by the id of the outcome event it stores."""

    move: _Move
    event_id: str


def _refusal(error: BulkWriteError) -> BaseException:
    """What the caller of a statement that MongoDB refused gets: the driver's error, as every store error leaves."""
    refusal = StoreUnavailable()
    refusal.__cause__ = error
    return refusal


def _move(
    job_id: str,
    *,
    expected: Collection[JobState],
    to: JobState,
    fields: Mapping[str, Any],
    detail: str | None = None,
    error: JobError | None = None,
    increment_attempts: bool = False,
    conditions: Mapping[str, Any] | None = None,
    passed_through: HistoryEntry | None = None,
) -> _Move:
    """Move the job to ``to`` only if it is still in one of ``expected`` (and matches ``conditions``), setting
    ``fields`` and appending a history entry in the same write — after ``passed_through``, the entry of a state the
    job went through on the way when one write records both (a short job: queued → running → completed)."""
    changes: dict[str, Any] = {"state": str(to), **fields}
    if not changes.keys() <= _JOB_FIELDS:
        raise ValueError(f"not fields of a job: {sorted(changes.keys() - _JOB_FIELDS)}")
    entries = [] if passed_through is None else [passed_through]
    entries.append(HistoryEntry(state=to, at=utcnow(), detail=detail, error=error))
    update: dict[str, Any] = {
        "$set": changes,
        "$push": {"history": {"$each": [entry.model_dump(mode="python") for entry in entries]}},
    }
    if increment_attempts:
        update["$inc"] = {"attempts": 1}
    states = _values(expected)
    # One expected state (nearly every transition) as an equality: SecantusDB's planner takes a third less time over
    # ``_id`` plus an equality than over ``_id`` plus a one-element ``$in``.
    state: str | dict[str, list[str]] = states[0] if len(states) == 1 else {"$in": states}
    return _Move(
        job_id=job_id,
        query={"_id": job_id, "state": state, **(conditions or {})},
        update=update,
        description=f"job {job_id} is not in state {', '.join(sorted(states))}; cannot move it to {to}",
    )
