"""Connecting to MongoDB and creating the indexes every query relies on."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorCollection, AsyncIOMotorDatabase
from pymongo.errors import OperationFailure
from pymongo.monitoring import CommandFailedEvent, CommandListener, CommandStartedEvent, CommandSucceededEvent

from engineroom.core.config import Settings
from engineroom.core.metrics import MONGODB_COMMANDS
from engineroom.models.notification import NotificationChannel
from engineroom.store.errors import bounded as bounded  # where callers have always found it
from engineroom.store.errors import safe_to_repeat

logger = logging.getLogger(__name__)

Database = AsyncIOMotorDatabase[dict[str, Any]]

#: Indexes of ``jobs`` that earlier versions made and no query uses any more: every write maintains them.
OBSOLETE_JOB_INDEXES = ("parked_by_tenant", "line", "line_by_tenant")

#: How long a query waits for a reachable server before the caller gets ``StoreUnavailable``.
SERVER_SELECTION_TIMEOUT_MS = 3000


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


async def ensure_indexes(db: Database, *, retention_days: int) -> None:
    """Create the indexes for the queries store/ makes; safe to run at every start.

    Finished jobs expire ``retention_days`` after ``finished_at`` (a TTL index: only terminal jobs have one).
    """
    jobs = db["jobs"]
    await _ensure_ttl(jobs, "finished_at", "retention", expire_after_s=retention_days * 86400)
    # GET /jobs: own jobs newest first (ids are time-sortable), and the admin's tenant-wide view.
    await jobs.create_index([("tenant_id", 1), ("user_id", 1), ("_id", -1)], name="owner_newest")
    await jobs.create_index([("tenant_id", 1), ("state", 1), ("_id", -1)], name="tenant_state_newest")
    await jobs.create_index([("tenant_id", 1), ("_id", -1)], name="tenant_newest")  # GET /usage, admins
    await jobs.create_index(
        [("tenant_id", 1), ("user_id", 1), ("idempotency_key", 1)],
        name="idempotency",
        unique=True,
        partialFilterExpression={"idempotency_key": {"$type": "string"}},
    )
    # The scheduler's and workers' sweeps. Each index covers every field its query names: SecantusDB (the
    # development and test server) plans an index only then, and ignores partial indexes.
    await jobs.create_index([("state", 1), ("next_attempt_at", 1)], name="due_retries")
    await jobs.create_index([("state", 1), ("scheduled_at", 1)], name="due_scheduled")
    await jobs.create_index([("state", 1), ("_id", 1)], name="by_state")
    await jobs.create_index([("workflow_id", 1), ("step_id", 1)], name="workflow_steps")
    await jobs.create_index([("state", 1), ("lease_expires_at", 1)], name="running_leases")
    await jobs.create_index([("needs_dispatch", 1), ("state", 1), ("queued_at", 1)], name="outbox")
    await jobs.create_index([("engine", 1), ("state", 1), ("parked", 1), ("priority", -1), ("_id", 1)], name="parked")
    # The line of a capped engine waits in RabbitMQ now (actors/admission.py): its indexes only cost writes.
    for obsolete in OBSOLETE_JOB_INDEXES:
        with contextlib.suppress(OperationFailure):
            await jobs.drop_index(obsolete)
    # Queue positions and per-engine counts.
    await jobs.create_index([("engine", 1), ("state", 1), ("priority", -1), ("_id", 1)], name="engine_state_order")
    # Recently finished jobs of some states (GET /queues, /status, cleanup): state first, SecantusDB plans it.
    await jobs.create_index([("state", 1), ("finished_at", 1)], name="state_finished")
    await jobs.create_index([("state", 1), ("queued_at", 1)], name="state_queued_at")
    workflows = db["workflows"]
    await workflows.create_index([("tenant_id", 1), ("user_id", 1), ("_id", -1)], name="owner_newest")
    await workflows.create_index([("state", 1)], name="by_state")
    await db["leases"].create_index([("expires_at", 1)], name="lease_expiry")
    schedules = db["schedules"]
    # The scheduler's sweeps (due ticks; ticks whose claimer died) and GET /schedules, the owner's newest first.
    await schedules.create_index([("paused", 1), ("next_fire_at", 1)], name="due_schedules")
    await schedules.create_index([("tenant_id", 1), ("user_id", 1), ("_id", -1)], name="schedule_owner_newest")
    await schedules.create_index([("pending_fire.claimed_at", 1)], name="pending_fires")
    events = db["events"]
    # Replays (store/events.py): one query per routing key, each covered; records expire at ``expires_at``.
    await events.create_index([("tenant_id", 1), ("user_id", 1), ("_id", 1)], name="owner_replay")
    await events.create_index([("tenant_id", 1), ("_id", 1)], name="tenant_replay")
    await events.create_index([("job_id", 1), ("_id", 1)], name="job_replay")
    await events.create_index([("workflow_id", 1), ("_id", 1)], name="workflow_replay")
    await events.create_index([("audience", 1), ("_id", 1)], name="audience_replay")
    await events.create_index([("expires_at", 1)], name="events_ttl", expireAfterSeconds=0)
    notifications = db["notifications"]
    # GET /notifications, all or only the unread (``read_at: null``), newest first; the second index names every
    # field of the unread query, so SecantusDB uses it too.
    await notifications.create_index([("tenant_id", 1), ("user_id", 1), ("_id", -1)], name="owner_newest")
    await notifications.create_index(
        [("tenant_id", 1), ("user_id", 1), ("read_at", 1), ("_id", -1)], name="owner_unread_newest"
    )
    preferences = db["notification_preferences"]
    await preferences.create_index([("tenant_id", 1), ("user_id", 1)], name="one_per_user", unique=True)
    # The notifier's "does anyone want this event type" (store/preferences.py ``enabled_types``): one query per
    # channel, each naming both fields of its index (SecantusDB scans the collection for an ``$or`` of them).
    for channel in NotificationChannel:
        await preferences.create_index([(f"{channel}.events", 1), (f"{channel}.enabled", 1)], name=f"{channel}_wants")
    await db["rate_limits"].create_index([("expires_at", 1)], name="window_end", expireAfterSeconds=0)
    # GET /workers lists heartbeats still in force; lapsed ones expire (killed processes never delete theirs).
    await db["workers"].create_index([("expires_at", 1)], name="workers_ttl", expireAfterSeconds=0)
    logger.debug("indexes ensured on %s", db.name)
