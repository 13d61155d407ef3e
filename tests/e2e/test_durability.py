"""What a request was promised survives the database being killed the moment after: a job, a batch, a workflow and a
schedule are stored with ``j: true`` (``store.client.journaled``).

SecantusDB, like MongoDB with ``j: false``, keeps its journal buffer in its own memory: before this, a SIGKILL lost
an acknowledged write in one try of five 0.3 s after it, and every one of 8 jobs killed right after, and
``test_secantusdb_killed_and_restarted…`` lost a job it had been answered 202 for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from engineroom.core.embedded import EmbeddedDatabase
from engineroom.store.jobs import JobStore
from tests.ports import free_port
from tests.unit.store.test_jobs import make_job

#: Kills, each right after acknowledged inserts (with ``j: false``, two kills lost all 8 jobs).
TRIES = 2


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[EmbeddedDatabase]:
    database = EmbeddedDatabase(tmp_path / "db", port=free_port())
    try:
        yield database.start()
    finally:
        database.stop()


async def test_jobs_acknowledged_just_before_the_database_is_killed_are_there_after_its_restart(
    database: EmbeddedDatabase,
) -> None:
    # One client throughout: it reconnects to the restarted server (closing it while the server is dead takes 30 s).
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(
        database.url, tz_aware=True, serverSelectionTimeoutMS=20_000
    )
    try:
        jobs = JobStore(client["engineroom"])
        stored: list[str] = []
        for _ in range(TRIES):
            one, batch = make_job(), [make_job() for _ in range(3)]
            await jobs.insert(one)
            await jobs.insert_many(batch)
            stored += [one.id, *(job.id for job in batch)]
            database.kill()  # at once: no journal flush can come in between by luck of timing
            database.start()
        found = await client["engineroom"]["jobs"].distinct("_id")
    finally:
        client.close()
    assert sorted(found) == sorted(stored), f"lost {len(set(stored) - set(found))} of {len(stored)}"
