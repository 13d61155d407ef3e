"""Retention on SecantusDB: finished jobs carry a TTL index whose horizon follows RETENTION_DAYS, and
``engineroom cleanup`` deletes (or counts) finished jobs past a cutoff, never unfinished ones."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from engineroom.core.clock import utcnow
from engineroom.core.config import Settings
from engineroom.models.job import JobState
from engineroom.store.client import Database, connect, ensure_indexes
from engineroom.store.jobs import JobStore
from tests.unit.store.test_jobs import make_job


@pytest.fixture
async def db(settings: Settings, mongodb_url: str) -> AsyncIterator[Database]:
    client = connect(settings.model_copy(update={"mongodb_url": mongodb_url}))
    yield client[settings.mongodb_db]
    client.close()


async def test_finished_jobs_expire_after_the_retention_days_and_a_new_horizon_applies(db: Database) -> None:
    await ensure_indexes(db, retention_days=30)
    assert (await db["jobs"].index_information())["retention"]["expireAfterSeconds"] == 30 * 86400
    await ensure_indexes(db, retention_days=7)  # RETENTION_DAYS changed between two starts
    retention = (await db["jobs"].index_information())["retention"]
    assert retention["key"] == [("finished_at", 1)] and retention["expireAfterSeconds"] == 7 * 86400


def cleanup(settings: Settings, mongodb_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ENGINEROOM_MONGODB_URL": mongodb_url, "ENGINEROOM_MONGODB_DB": settings.mongodb_db}
    command = [sys.executable, "-m", "engineroom.cli", "cleanup", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


async def test_cleanup_dry_run_counts_and_a_real_run_deletes_only_old_finished_jobs(
    db: Database, settings: Settings, mongodb_url: str
) -> None:
    jobs = JobStore(db)
    await ensure_indexes(db, retention_days=30)
    long_ago, lately = utcnow() - timedelta(days=10), utcnow() - timedelta(days=1)
    old_failed = await jobs.insert(make_job(state=JobState.FAILED, finished_at=long_ago))
    old_completed = await jobs.insert(make_job(state=JobState.COMPLETED, finished_at=long_ago))
    recent = await jobs.insert(make_job(state=JobState.COMPLETED, finished_at=lately))
    running = await jobs.insert(make_job(state=JobState.RUNNING, started_at=long_ago))

    counted = cleanup(settings, mongodb_url, "--older-than", "7d", "--dry-run")
    assert counted.returncode == 0 and "would delete 2 finished job(s)" in counted.stdout
    assert all([await jobs.get(job.id) for job in (old_failed, old_completed, recent, running)])

    only_failed = cleanup(settings, mongodb_url, "--older-than", "7d", "--state", "failed")
    assert only_failed.returncode == 0 and "deleted 1 finished job(s)" in only_failed.stdout
    assert await jobs.get(old_failed.id) is None and await jobs.get(old_completed.id) is not None

    everything_old = cleanup(settings, mongodb_url, "--older-than", "7d")
    assert "deleted 1 finished job(s)" in everything_old.stdout
    assert [await jobs.get(job.id) is not None for job in (old_completed, recent, running)] == [False, True, True]

    for bad in (["--older-than", "soon"], ["--older-than", "1d", "--state", "running"]):
        refused = cleanup(settings, mongodb_url, *bad)
        assert refused.returncode == 2 and refused.stderr.startswith("engineroom cleanup:"), refused.stderr
