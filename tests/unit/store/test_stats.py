"""JobStats.ready: the autoscaler's backlog counts queued jobs of the given engines, parked ones left out."""

from __future__ import annotations

from typing import Any

from engineroom.store.client import Database
from engineroom.store.stats import JobStats


def job(n: int, engine: str, state: str, *, parked: bool = False) -> dict[str, Any]:
    return {"_id": f"J{n:03d}", "engine": engine, "state": state, "parked": parked}


async def test_ready_counts_queued_unparked_jobs_of_the_engines_asked_for(db: Database) -> None:
    await db["jobs"].insert_many(
        [
            *(job(n, "general", "queued") for n in range(5)),
            *(job(n, "general", "queued", parked=True) for n in range(5, 8)),
            *(job(n, "general", "running") for n in range(8, 10)),
            *(job(n, "text_intelligence", "queued") for n in range(10, 14)),
            *(job(n, "video_pipeline", "queued") for n in range(14, 20)),
        ]
    )
    stats = JobStats(db)
    assert await stats.ready(["general"]) == 5
    assert await stats.ready(["general", "text_intelligence"]) == 9
    assert await stats.ready([]) == 0
