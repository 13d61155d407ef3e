"""``engineroom cleanup``: delete finished jobs older than a cutoff, and their artifacts, for runs between the
TTL's sweeps or with a shorter horizon than ``RETENTION_DAYS``. Talks to MongoDB directly: it is an operator's tool,
run with the deployment's own settings, and crosses tenants."""

from __future__ import annotations

from datetime import timedelta

from engineroom.artifacts.factory import build_artifact_store
from engineroom.artifacts.sweep import delete_orphans
from engineroom.core.clock import utcnow
from engineroom.core.config import Settings
from engineroom.models.job import TERMINAL_STATES, JobState
from engineroom.store.client import connect
from engineroom.store.jobs import JobStore


async def delete_finished_jobs(
    settings: Settings, older_than: timedelta, states: list[JobState] | None, *, dry_run: bool
) -> int:
    """How many finished jobs (of ``states``, default every terminal state) older than ``older_than`` were
    deleted, or would be with ``dry_run``.

    Raises:
      ValueError: a state that is not terminal (running or waiting jobs are never cleaned up).
      StoreUnavailable: MongoDB failed.
    """
    chosen = states or sorted(TERMINAL_STATES)
    unfinished = [str(state) for state in chosen if state not in TERMINAL_STATES]
    if unfinished:
        raise ValueError(f"only finished jobs can be cleaned up, not {', '.join(unfinished)}")
    client = connect(settings)
    artifacts = build_artifact_store(settings, client[settings.mongodb_db])
    try:
        jobs = JobStore(client[settings.mongodb_db])
        deleted = await jobs.delete_finished(utcnow() - older_than, chosen, dry_run=dry_run)
        if not dry_run:
            await delete_orphans(artifacts, jobs)  # their files, and those of jobs the TTL removed
        return deleted
    finally:
        await artifacts.close()
        client.close()
