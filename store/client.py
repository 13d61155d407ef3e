"""Connecting to MongoDB and creating the indexes every query relies on."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, Literal

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorCollection, AsyncIOMotorDatabase
from pymongo import IndexModel
from pymongo.errors import OperationFailure
from pymongo.monitoring import CommandFailedEvent, CommandListener, CommandStartedEvent, CommandSucceededEvent
from pymongo.write_concern import WriteConcern

from engineroom.core.config import Settings
from engineroom.core.metrics import MONGODB_COMMANDS
from engineroom.models.notification import NotificationChannel
from engineroom.store.errors import bounded as bounded  # where callers have always found it
from engineroom.store.errors import safe_to_repeat
from engineroom.store.event_keys import keys_of

logger = logging.getLogger(__name__)

Database = AsyncIOMotorDatabase[dict[str, Any]]

#: Indexes of ``jobs`` that earlier versions made and no query uses any more: every write maintains them (queue
#: positions, ``engine_state_order``'s last use, count over the ``parked`` index now).
OBSOLETE_JOB_INDEXES = ("parked_by_tenant", "line", "line_by_tenant", "engine_state_order")

#: How long a query waits for a reachable server before the caller gets ``StoreUnavailable``.
SERVER_SELECTION_TIMEOUT_MS = 3000


#: Writes acknowledged only once in the journal (MongoDB's ``j: true``).
JOURNALED = WriteConcern(j=True)


def journaled(db: Database, name: str) -> AsyncIOMotorCollection[dict[str, Any]]:
    """Collection ``name`` for writes that answer a request with a promise: a stored job, workflow or schedule.

    A 202 says the job is kept. MongoDB's default (``j: false``) acknowledges a write once it is in memory; a crash
    within its journal interval loses it. SecantusDB the same: its journal buffer lives in the process, and a
    SIGKILL lost a job accepted a second before. ``j: true`` costs one journal flush per request (a batch is one
    write) and leaves ``w`` to the server's default (majority on a replica set).
    """
    # Not ``with_options``: mongomock-motor (the unit tests' store) returns a synchronous collection from it.
    return db.get_collection(name, write_concern=JOURNALED)


def connect(
    settings: Settings, *, event_listeners: Sequence[CommandListener] = ()
) -> AsyncIOMotorClient[dict[str, Any]]:
    """A motor client; it binds to the running event loop on first use, so call this from that loop.

    ``event_listeners`` see every command the client sends (pymongo's command monitoring): tests count a code
    path's round trips with them.
    """
    return AsyncIOMotorClient(
        settings.mongodb_url,
        tz_aware=True,
        serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS,
        uuidRepresentation="standard",
        event_listeners=[*([_COMMAND_COUNTER] if settings.count_mongodb_commands else []), *event_listeners],
    )


class _CommandCounter(CommandListener):
    """Counts every command into ``engineroom_mongodb_commands_total`` (the round trips per job, in ``/metrics``
    and in the bench)."""

    def started(self, event: CommandStartedEvent) -> None:
        MONGODB_COMMANDS.labels(event.command_name).inc()

    def succeeded(self, event: CommandSucceededEvent) -> None:
        """Counted when started."""

    def failed(self, event: CommandFailedEvent) -> None:
        """Counted when started."""


_COMMAND_COUNTER = _CommandCounter()


async def _ensure_ttl(
    collection: AsyncIOMotorCollection[dict[str, Any]], field: str, name: str, *, expire_after_s: int
) -> None:
    """A TTL index on ``field``; a changed TTL (say, ``RETENTION_DAYS``) is applied to the existing index."""
    try:
        await collection.create_index([(field, 1)], name=name, expireAfterSeconds=expire_after_s)
    except OperationFailure:  # IndexOptionsConflict: the index exists with another TTL
        index = {"name": name, "expireAfterSeconds": expire_after_s}
        await collection.database.command("collMod", collection.name, index=index)
        logger.info("TTL of %s.%s set to %d s", collection.name, name, expire_after_s)


@safe_to_repeat
async def ping(db: Database) -> None:
    """Check that MongoDB answers.

    Raises:
      StoreUnavailable: it does not.
    """
    await db.command("ping")


IndexSet = Literal["auto", "minimal", "full"]


@dataclass(frozen=True)
class _JobIndex:
    keys: list[tuple[str, int]]
    name: str
    #: Made only with the ``full`` set (see ``FULL_ONLY_JOB_INDEXES``).
    full_only: bool = False
    options: dict[str, Any] = field(default_factory=dict)


#: The indexes of ``jobs`` after the TTL. SecantusDB (the embedded default) rewrites every index entry of a document,
#: and reads every index's definition several times, on each write: a job update costs ~0.1 ms of its CPU per index.
#: So the ``minimal`` set (SecantusDB's) keeps only the indexes the job path and the sweeps need; the ``full_only``
#: ones serve dashboards and operators' queries that on SecantusDB ride another index by one of their equality
#: clauses (its planner looks a clause up alone when no index covers the whole query: a read bounded by that
#: clause, such as one owner's jobs or one state's), or that SecantusDB's planner never picks. MongoDB maintains
#: only the entries whose keys change, so it keeps them all.
JOB_INDEXES = (
    # GET /jobs: own jobs newest first (ids are time-sortable); an admin's tenant-wide view rides its tenant_id.
    _JobIndex([("tenant_id", 1), ("user_id", 1), ("_id", -1)], "owner_newest"),
    _JobIndex([("tenant_id", 1), ("state", 1), ("_id", -1)], "tenant_state_newest", full_only=True),
    _JobIndex([("tenant_id", 1), ("_id", -1)], "tenant_newest", full_only=True),  # GET /usage, admins
    _JobIndex(
        [("tenant_id", 1), ("user_id", 1), ("idempotency_key", 1)],
        "idempotency",
        options={"unique": True, "partialFilterExpression": {"idempotency_key": {"$type": "string"}}},
    ),
    # The scheduler's and workers' sweeps. Each index covers every field its query names: SecantusDB (the
    # development and test server) plans a whole query on an index only then, and ignores partial indexes.
    _JobIndex([("state", 1), ("next_attempt_at", 1)], "due_retries"),
    _JobIndex([("state", 1), ("scheduled_at", 1)], "due_scheduled"),
    _JobIndex([("state", 1), ("_id", 1)], "by_state"),
    # GET /jobs?workflow_id=: MongoDB may start there; no query names step_id.
    _JobIndex([("workflow_id", 1), ("step_id", 1)], "workflow_steps", full_only=True),
    # Expired leases: on SecantusDB the sweep reads the running jobs (by_state), as few as the engines' slots.
    _JobIndex([("state", 1), ("lease_expires_at", 1)], "running_leases", full_only=True),
    _JobIndex([("needs_dispatch", 1), ("state", 1), ("queued_at", 1)], "outbox"),
    # Parked jobs in start order, the jobs expected in RabbitMQ, queue positions, the autoscaler's backlog.
    _JobIndex([("engine", 1), ("state", 1), ("parked", 1), ("priority", -1), ("_id", 1)], "parked"),
    # Recently finished jobs of a state (GET /queues, /status, cleanup): on SecantusDB they ride the retention
    # index (finished_at), a day's or an hour's jobs.
    _JobIndex([("state", 1), ("finished_at", 1)], "state_finished", full_only=True),
    # The oldest queued job (GET /status): SecantusDB picks by_state for ``{state}`` and sorts the queued jobs.
    _JobIndex([("state", 1), ("queued_at", 1)], "state_queued_at", full_only=True),
)

#: The indexes only the ``full`` set makes; ``minimal`` drops them where an earlier start made them.
FULL_ONLY_JOB_INDEXES = tuple(index.name for index in JOB_INDEXES if index.full_only)


async def chosen_index_set(db: Database, wanted: IndexSet) -> Literal["minimal", "full"]:
    """``wanted``, or for ``auto`` the set for the server: ``minimal`` on SecantusDB (its ``buildInfo`` names its
    version), ``full`` on MongoDB."""
    if wanted != "auto":
        return wanted
    info = await db.client.admin.command("buildInfo")
    return "minimal" if "secantusVersion" in info else "full"


#: The replay indexes of ``events`` before the ``replay`` index, one per kind of routing key.
OLD_REPLAY_INDEXES = ("owner_replay", "tenant_replay", "job_replay", "workflow_replay", "audience_replay")


async def _replace_old_replay_indexes(events: AsyncIOMotorCollection[dict[str, Any]], present: Set[str]) -> None:
    """On the first start after the ``replay`` index came: give the events recorded before it their replay keys
    (they are kept for resumes until they expire), then drop the indexes it replaces. Only while those exist, so
    the scan of the collection is paid once."""
    old = [name for name in OLD_REPLAY_INDEXES if name in present]
    if not old:
        return
    async for document in events.find({"keys": {"$exists": False}}, {"keys": 0, "data": 0}):
        await events.update_one({"_id": document["_id"]}, {"$set": {"keys": keys_of(document)}})
    await _drop(events, old)
    logger.info("events: replay keys given to the recorded events, %d old replay indexes dropped", len(old))


async def _drop(collection: AsyncIOMotorCollection[dict[str, Any]], names: Iterable[str]) -> None:
    for name in names:
        with contextlib.suppress(OperationFailure):  # another process dropped it first
            await collection.drop_index(name)


#: The indexes of every collection but ``jobs``, by collection.
OTHER_INDEXES: dict[str, list[IndexModel]] = {
    "outbox": [IndexModel([("at", 1)], name="outbox_age")],  # batches whose messages are in doubt
    "workflows": [
        IndexModel([("tenant_id", 1), ("user_id", 1), ("_id", -1)], name="owner_newest"),
        IndexModel([("state", 1)], name="by_state"),
    ],
    "leases": [IndexModel([("expires_at", 1)], name="lease_expiry")],
    # The scheduler's sweeps (due ticks; ticks whose claimer died) and GET /schedules, the owner's newest first.
    "schedules": [
        IndexModel([("paused", 1), ("next_fire_at", 1)], name="due_schedules"),
        IndexModel([("tenant_id", 1), ("user_id", 1), ("_id", -1)], name="schedule_owner_newest"),
        IndexModel([("pending_fire.claimed_at", 1)], name="pending_fires"),
    ],
    # Replays (store/events.py): one query per routing key, each a range of one multikey index over the events'
    # replay keys (store/event_keys.py); records expire at ``expires_at``.
    "events": [
        IndexModel([("keys", 1), ("_id", 1)], name="replay"),
        IndexModel([("expires_at", 1)], name="events_ttl", expireAfterSeconds=0),
    ],
    # GET /notifications, all or only the unread (``read_at: null``), newest first; the second index names every
    # field of the unread query, so SecantusDB uses it too.
    "notifications": [
        IndexModel([("tenant_id", 1), ("user_id", 1), ("_id", -1)], name="owner_newest"),
        IndexModel([("tenant_id", 1), ("user_id", 1), ("read_at", 1), ("_id", -1)], name="owner_unread_newest"),
    ],
    # One document per user; and the notifier's "does anyone want this event type" (store/preferences.py
    # ``enabled_types``): one query per channel, each naming both fields of its index (SecantusDB scans the
    # collection for an ``$or`` of them).
    "notification_preferences": [
        IndexModel([("tenant_id", 1), ("user_id", 1)], name="one_per_user", unique=True),
        *(
            IndexModel([(f"{channel}.events", 1), (f"{channel}.enabled", 1)], name=f"{channel}_wants")
            for channel in NotificationChannel
        ),
    ],
    "rate_limits": [IndexModel([("expires_at", 1)], name="window_end", expireAfterSeconds=0)],
    # GET /workers lists heartbeats still in force; lapsed ones expire (killed processes never delete theirs).
    "workers": [IndexModel([("expires_at", 1)], name="workers_ttl", expireAfterSeconds=0)],
}


async def ensure_indexes(db: Database, *, retention_days: int, index_set: IndexSet = "auto") -> None:
    """Create the indexes for the queries store/ makes; safe to run at every start.

    Finished jobs expire ``retention_days`` after ``finished_at`` (a TTL index: only terminal jobs have one).
    ``index_set`` chooses the ``jobs`` indexes (``JOB_INDEXES``); a set changed between two starts adds or drops
    the difference. One ``createIndexes`` per collection: every process starts with this, and every test database
    is made with it (it took 46 commands, 50-100 ms on SecantusDB, one index at a time).
    """
    full = await chosen_index_set(db, index_set) == "full"
    jobs = db["jobs"]
    await _ensure_ttl(jobs, "finished_at", "retention", expire_after_s=retention_days * 86400)
    wanted = [index for index in JOB_INDEXES if full or not index.full_only]
    await jobs.create_indexes([IndexModel(index.keys, name=index.name, **index.options) for index in wanted])
    # Indexes no query uses any more, and with the minimal set the full set's own: every write maintains them.
    unwanted = {*OBSOLETE_JOB_INDEXES, *(() if full else FULL_ONLY_JOB_INDEXES)}
    await _drop(jobs, unwanted & set(await jobs.index_information()))
    for name, indexes in OTHER_INDEXES.items():
        await db[name].create_indexes(indexes)
    await _replace_old_replay_indexes(db["events"], set(await db["events"].index_information()))
    logger.debug("indexes ensured on %s", db.name)
