"""The replay log on SecantusDB: recording is idempotent, replays merge several keys without skipping, and
records carry the expiry the TTL index reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from engineroom.core.config import Settings
from engineroom.models.event import Event, EventType, new_event
from engineroom.store import events as events_module
from engineroom.store.client import connect, ensure_indexes
from engineroom.store.documents import to_mongo
from engineroom.store.events import EventStore


@pytest.fixture
async def events(settings: Settings, mongodb_url: str) -> AsyncIterator[EventStore]:
    client = connect(settings.model_copy(update={"mongodb_url": mongodb_url}))
    db = client[settings.mongodb_db]
    await ensure_indexes(db, retention_days=30)
    yield EventStore(db, ttl_s=60)
    client.close()


def event(user: str, job_id: str | None = None) -> Event:
    return new_event(EventType.JOB_PROGRESS, tenant_id="replay", user_id=user, job_id=job_id, data={"n": 1})


async def test_a_replay_merges_keys_in_id_order_across_pages(
    events: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_module, "REPLAY_PAGE", 3)
    start = event("nobody")
    # bob's own events and a job of carol's (which an admin watches), interleaved in time
    recorded = [event("bob") if n % 3 else event("carol", job_id="JC") for n in range(20)]
    for item in reversed(recorded):  # recorded out of order: replay order comes from ids, not insertion
        await events.record(item)
    await events.record(recorded[0])  # recording twice is a no-op
    found, more = await events.after(["user:replay:bob", "job:JC"], start.id, limit=100)
    assert [item.id for item in found] == [item.id for item in recorded] and more is False
    first, more = await events.after(["user:replay:bob", "job:JC"], start.id, limit=7)
    assert [item.id for item in first] == [item.id for item in recorded[:7]] and more is True
    rest, more = await events.after(["user:replay:bob", "job:JC"], first[-1].id, limit=100)
    assert first + rest == found and more is False


async def test_records_expire_after_the_ttl(events: EventStore) -> None:
    item = event("dora")
    await events.record(item)
    stored = await events.collection.find_one({"_id": item.id})
    assert stored is not None and (stored["expires_at"] - item.ts).total_seconds() == 60
    indexes = await events.collection.index_information()
    assert indexes["events_ttl"]["expireAfterSeconds"] == 0


async def test_an_owners_replay_never_holds_another_owners_events_whatever_their_ids(events: EventStore) -> None:
    start = new_event(EventType.JOB_PROGRESS, tenant_id="t", data={})
    theirs = new_event(EventType.JOB_PROGRESS, tenant_id="a:b", user_id="c", data={})
    mine = new_event(EventType.JOB_PROGRESS, tenant_id="a", user_id="b:c", data={})
    for item in (theirs, mine):
        await events.record(item)
    found, _ = await events.after(["user:a:b:c"], start.id, limit=10)
    assert [item.id for item in found] == [mine.id]


async def test_events_recorded_before_the_replay_index_replay_after_the_upgrade(
    settings: Settings, mongodb_url: str
) -> None:
    client = connect(settings.model_copy(update={"mongodb_url": mongodb_url}))
    db = client[settings.mongodb_db]
    try:
        # An earlier version's collection: an index per kind of key, events without replay keys
        old = db["events"]
        await old.create_index([("tenant_id", 1), ("user_id", 1), ("_id", 1)], name="owner_replay")
        await old.create_index([("job_id", 1), ("_id", 1)], name="job_replay")
        start = event("nobody")
        recorded = [event("erin", job_id="JE"), event("erin"), event("frank", job_id="JF")]
        for item in recorded:
            await old.insert_one({**to_mongo(item), "expires_at": item.ts})
        await ensure_indexes(db, retention_days=30)
        store = EventStore(db, ttl_s=60)
        assert [item.id for item in (await store.after(["user:replay:erin"], start.id, limit=10))[0]] == [
            item.id for item in recorded[:2]
        ]
        assert [item.id for item in (await store.after(["job:JF"], start.id, limit=10))[0]] == [recorded[2].id]
        assert set(await old.index_information()) == {"_id_", "replay", "events_ttl"}
    finally:
        client.close()


async def test_an_event_that_lingers_keeps_lingering_while_a_write_is_in_flight(
    events: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[list[str]] = []
    insert = events._insert

    async def counted(batch: list[Event]) -> None:
        writes.append([recorded.id for recorded in batch])
        await insert(batch)

    monkeypatch.setattr(events, "_insert", counted)
    first, lingering, last = event("alice"), event("alice"), event("alice")
    # Given a write in flight, and an event that may wait for company arriving during it
    in_flight = asyncio.create_task(events.record(first))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(events.record(lingering, linger_s=10.0))
    await in_flight
    # When, after that write, an event that waits for none is recorded
    await events.record(last)
    await waiting
    # Then the lingering event went with it, not on its own right after the write it arrived during
    assert writes == [[first.id], [lingering.id, last.id]]


async def test_a_lingering_event_is_written_when_its_time_is_up(events: EventStore) -> None:
    lingering = event("alice")
    await asyncio.wait_for(events.record(lingering, linger_s=0.01), timeout=5)
    replay, _ = await events.after(["user:replay:alice"], "0", limit=10)
    assert [recorded.id for recorded in replay] == [lingering.id]
