"""QueueStore admission on SecantusDB (it uses pipeline updates and $expr, which mongomock lacks)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from engineroom.core.clock import utcnow
from engineroom.core.config import Settings
from engineroom.models.queue import QueueLimits
from engineroom.store.client import connect
from engineroom.store.queues import QueueStore


@pytest.fixture
async def queues(settings: Settings, mongodb_url: str) -> AsyncIterator[QueueStore]:
    client = connect(settings.model_copy(update={"mongodb_url": mongodb_url}))
    store = QueueStore(client[settings.mongodb_db], rate_window_s=60)
    await store.ensure_defaults()
    yield store
    client.close()


async def acquire(queues: QueueStore, job_id: str, tenant: str = "t", *, at_s: float = 0) -> bool:
    now = utcnow() + timedelta(seconds=at_s)
    return await queues.try_acquire(
        "general", job_id=job_id, tenant_id=tenant, worker_id="w", until=now + timedelta(seconds=30), now=now
    )


async def test_slots_are_limited_and_come_back_on_release(queues: QueueStore) -> None:
    assert [await acquire(queues, job) for job in ("a", "b", "c")] == [True, True, False]
    await queues.release("general", "a", "w")
    assert await acquire(queues, "c") is True


async def test_a_job_holds_at_most_one_slot(queues: QueueStore) -> None:
    assert await acquire(queues, "a") is True
    assert await acquire(queues, "a") is False  # a duplicate message of a job being started elsewhere
    await queues.release("general", "a", "w")
    assert len((await queues.get("general")).holders) == 0


async def test_a_lapsed_slot_is_free_again(queues: QueueStore) -> None:
    assert await acquire(queues, "a") and await acquire(queues, "b")
    assert await acquire(queues, "c", at_s=31) is True  # both leases lapsed by then
    assert [holder.job_id for holder in (await queues.get("general")).holders] == ["c"]


async def test_a_paused_engine_or_a_zero_limit_admits_nothing(queues: QueueStore) -> None:
    await queues.pause("general", by="ops", reason="x", until=None)
    assert await acquire(queues, "a") is False
    await queues.resume("general")
    await queues.set_limits("general", QueueLimits(max_concurrency=0))
    assert await acquire(queues, "a") is False


async def test_rate_and_tenant_limits_admit_only_what_they_allow(queues: QueueStore) -> None:
    await queues.set_limits("general", QueueLimits(max_concurrency=10, max_starts_per_minute=3))
    assert [await acquire(queues, f"j{n}", tenant=f"t{n}") for n in range(4)] == [True, True, True, False]
    await queues.set_limits(
        "general", QueueLimits(max_concurrency=10, max_starts_per_minute=None, max_concurrency_per_tenant=1)
    )
    assert await acquire(queues, "x", tenant="t0") is False  # t0 already runs j0
    assert await acquire(queues, "y", tenant="fresh") is True
