"""The notifier on SecantusDB: at-least-once events make one notification and one delivery message each, and what
nobody asked for costs no database command (counted with pymongo's command monitoring)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from dramatiq.brokers.stub import StubBroker
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo.errors import InvalidOperation
from pymongo.monitoring import CommandFailedEvent, CommandListener, CommandStartedEvent, CommandSucceededEvent

from engineroom.core.config import Settings
from engineroom.core.ids import new_id
from engineroom.messaging.broker import Enqueuer
from engineroom.messaging.bus import LocalEventBus
from engineroom.models.event import Event, EventType, new_event
from engineroom.models.notification import (
    DeliveryState,
    EmailPreference,
    NotifiableEvent,
    NotificationChannel,
    NotificationPreferences,
    WebSocketPreference,
)
from engineroom.models.principal import Principal
from engineroom.notifications.notifier import Notifier
from engineroom.notifications.preference_cache import PreferenceCache
from engineroom.services.publisher import AsyncEventPublisher
from engineroom.store.client import Database, connect
from engineroom.store.events import EventStore
from engineroom.store.notifications import NotificationStore
from engineroom.store.preferences import PreferenceStore

ALICE = Principal(user_id="alice", tenant_id="acme")
#: The expiry of the notifier's preferences in these tests, where a test does not move the clock itself.
LONG_TTL_S = 600.0
#: What one refresh of "which opt-in types does anyone enable" costs: a find per channel and opt-in type.
REFRESH_COMMANDS = len(NotificationChannel) * 1  # job.started is the one opt-in type
#: Commands per notification once the owner's preferences are cached: the notification and its
#: ``notification.created`` record in one ``bulkWrite`` (on main: four, two finds and two inserts).
COMMANDS_PER_NOTIFICATION = 1


def completed_event(user_id: str = "alice") -> Event:
    data = {"state": "completed", "task": "general.demo", "engine": "general", "result": 1}
    return new_event(EventType.JOB_COMPLETED, tenant_id="acme", user_id=user_id, job_id=new_id(), data=data)


def job_event(kind: EventType, user_id: str) -> Event:
    data = {"state": "running", "task": "general.demo", "engine": "general"}
    return new_event(kind, tenant_id="acme", user_id=user_id, job_id=new_id(), data=data)


@dataclass
class CommandLog(CommandListener):
    """Every command a client sends, by name and collection (pymongo calls this from motor's threads)."""

    commands: list[tuple[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def started(self, event: CommandStartedEvent) -> None:
        collection = event.command.get(event.command_name)
        with self._lock:
            self.commands.append((event.command_name, collection if isinstance(collection, str) else ""))

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass

    @contextmanager
    def counting(self) -> Iterator[list[tuple[str, str]]]:
        """The commands sent inside the block, as they come; left as they were when it ends."""
        with self._lock:
            seen: list[tuple[str, str]] = []
            self.commands = seen
        yield seen
        with self._lock:
            self.commands = []


@dataclass
class Harness:
    """A notifier on a monitored client, with an in-process broker and bus."""

    notifier: Notifier
    log: CommandLog
    broker: StubBroker
    heard: list[Event]
    clock: list[float]


@pytest.fixture
async def monitored(db: Database, settings: Settings, mongodb_url: str) -> AsyncIterator[tuple[Database, CommandLog]]:
    """The ``db`` fixture's database (indexes made) through a client of its own that reports every command."""
    log = CommandLog()
    client = connect(settings.model_copy(update={"mongodb_url": mongodb_url}), event_listeners=[log])
    yield client[db.name], log
    client.close()


@pytest.fixture
async def harness(settings: Settings, monitored: tuple[Database, CommandLog]) -> AsyncIterator[Harness]:
    """Given a notifier on the monitored client, whose preferences expire after ``LONG_TTL_S`` on a clock the test
    moves."""
    db, log = monitored
    broker = StubBroker()
    broker.declare_queue(settings.notifications_queue)
    bus = LocalEventBus()
    heard: list[Event] = []
    bus.subscribe(heard.append)
    publisher = AsyncEventPublisher(bus, EventStore(db, ttl_s=60))
    enqueuer = Enqueuer(broker, settings)
    clock = [0.0]
    preferences = PreferenceCache(PreferenceStore(db), ttl_s=LONG_TTL_S, max_users=100, clock=lambda: clock[0])
    notifier = Notifier(settings, NotificationStore(db), preferences, publisher, enqueuer)
    try:
        yield Harness(notifier, log, broker, heard, clock)
    finally:
        publisher.close()
        enqueuer.close()


async def test_a_redelivered_event_makes_one_notification_and_one_email_message(
    db: Database, settings: Settings, harness: Harness
) -> None:
    # Given alice wants emails
    email = EmailPreference(enabled=True, address="alice@example.com")
    await PreferenceStore(db).put("acme", "alice", NotificationPreferences(email=email))
    event = completed_event()
    # When the same event arrives twice (RabbitMQ delivers at least once)
    await harness.notifier.handle([event])
    await harness.notifier.handle([event])
    # Then one notification, named after the event, with its email queued once
    page = await NotificationStore(db).list_own(ALICE)
    assert [item.id for item in page.items] == [event.id]
    assert page.items[0].deliveries[NotificationChannel.EMAIL].state == DeliveryState.QUEUED
    assert harness.broker.queues[settings.notifications_queue].qsize() == 1
    # and its announcement repeated under one id, which gateways drop as a repeat
    created = [heard_event for heard_event in harness.heard if heard_event.type == EventType.NOTIFICATION_CREATED]
    assert len(created) == 2 and len({announced.id for announced in created}) == 1
    # and recorded for replay once, under that id: the second delivery recorded no announcement of its own
    replay, _ = await EventStore(db, ttl_s=60).after(["user:acme:alice"], "0", limit=10)
    assert [recorded.id for recorded in replay if recorded.type == EventType.NOTIFICATION_CREATED] == [created[0].id]


async def test_events_of_other_kinds_or_without_an_owner_notify_nobody(db: Database, harness: Harness) -> None:
    progress = new_event(EventType.JOB_PROGRESS, tenant_id="acme", user_id="alice", job_id=new_id(), data={})
    ownerless = completed_event().model_copy(update={"user_id": None})
    for event in (progress, ownerless):
        await harness.notifier.handle([event])
    assert (await NotificationStore(db).list_own(ALICE)).items == []


async def test_starts_and_progress_nobody_asked_for_are_dropped_before_any_read(db: Database, harness: Harness) -> None:
    # Given users on the defaults, and bob, whose stored preferences email failures but not starts
    email = EmailPreference(enabled=True, address="bob@example.com", events=[NotifiableEvent.JOB_FAILED])
    await PreferenceStore(db).put("acme", "bob", NotificationPreferences(email=email))
    users = ["bob", *(f"user{n}" for n in range(9))]
    # When 200 job.started and 200 job.progress events arrive
    with harness.log.counting() as commands:
        for n in range(200):
            for kind in (EventType.JOB_STARTED, EventType.JOB_PROGRESS):
                await harness.notifier.handle([job_event(kind, users[n % len(users)])])
    # Then the only commands are one refresh of "does anyone enable job.started": no per-event read, no write
    assert len(commands) <= REFRESH_COMMANDS, Counter(commands)
    assert set(commands) <= {("find", "notification_preferences")}
    assert harness.heard == []


async def test_a_completion_on_the_default_preferences_costs_one_command(db: Database, harness: Harness) -> None:
    # Given five users who never set preferences (websocket on for completions)
    users = [f"user{n}" for n in range(5)]
    # When 100 of their jobs complete
    with harness.log.counting() as commands:
        for n in range(100):
            await harness.notifier.handle([completed_event(users[n % len(users)])])
    # Then each user's preferences were read once, and each notification took one write with its announcement
    assert Counter(commands) == {
        ("find", "notification_preferences"): len(users),
        ("bulkWrite", ""): 100 * COMMANDS_PER_NOTIFICATION,
    }
    created = [event for event in harness.heard if event.type == EventType.NOTIFICATION_CREATED]
    assert len(created) == 100
    # and every notification is stored and its announcement recorded for replay
    for user in users:
        page = await NotificationStore(db).list_own(Principal(user_id=user, tenant_id="acme"))
        assert len(page.items) == 20
        replay, _ = await EventStore(db, ttl_s=60).after([f"user:acme:{user}"], "0", limit=100)
        assert {event.data["id"] for event in replay} == {item.id for item in page.items}


async def test_completions_delivered_together_cost_one_write(db: Database, harness: Harness) -> None:
    # Given five users who never set preferences, and 100 completions of their jobs that the bus delivered together
    users = [f"user{n}" for n in range(5)]
    events = [completed_event(users[n % len(users)]) for n in range(100)]
    # When the notifier handles them
    with harness.log.counting() as commands:
        await harness.notifier.handle(events)
    # Then each user's preferences were read once, and the 100 notifications and their records took one write
    assert Counter(commands) == {("find", "notification_preferences"): len(users), ("bulkWrite", ""): 1}
    stored = await db["notifications"].count_documents({})
    replay, _ = await EventStore(db, ttl_s=60).after([f"user:acme:{user}" for user in users], "0", limit=200)
    assert stored == 100 and sorted(event.data["id"] for event in replay) == sorted(event.id for event in events)
    assert [event.id for event in harness.heard] == [event.id for event in replay]


async def test_a_redelivered_event_in_a_batch_is_announced_again_and_the_others_once(
    db: Database, harness: Harness
) -> None:
    # Given a completion whose notification was stored and announced
    first, redelivered, last = completed_event(), completed_event(), completed_event()
    await harness.notifier.handle([redelivered])
    announced = [event.id for event in harness.heard]
    # When it comes again between two new ones
    with harness.log.counting() as commands:
        await harness.notifier.handle([first, redelivered, last])
    # Then the write stopped at it and went on after it; it was read back to be announced again under its id, its
    # record written again in case the first handling stored it without one (here a duplicate, passed over)
    assert commands == [("bulkWrite", ""), ("bulkWrite", ""), ("find", "notifications"), ("insert", "events")]
    items = (await NotificationStore(db).list_own(ALICE)).items
    assert sorted(item.id for item in items) == sorted([first.id, redelivered.id, last.id])
    # and each notification was recorded for replay once: none for the repeat
    replay, _ = await EventStore(db, ttl_s=60).after(["user:acme:alice"], "0", limit=10)
    assert sorted(recorded.data["id"] for recorded in replay) == sorted([first.id, redelivered.id, last.id])
    heard_again = [event.id for event in harness.heard[1:]]
    assert len(heard_again) == 3 and announced[0] in heard_again


async def test_before_mongodb_8_a_notification_and_its_record_are_two_writes(
    db: Database, harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a server without the cross-collection bulkWrite (MongoDB 7: pymongo refuses before sending anything)
    async def refuse(*_args: object, **_kwargs: object) -> None:
        raise InvalidOperation("MongoClient.bulk_write requires MongoDB server version 8.0+.")

    monkeypatch.setattr(AsyncIOMotorClient, "bulk_write", refuse)
    event = completed_event()
    # When a completion arrives twice
    with harness.log.counting() as commands:
        await harness.notifier.handle([event])
        await harness.notifier.handle([event])
    # Then the first stored it and recorded its announcement in two inserts; the second found it and re-announced it
    assert commands[:3] == [("find", "notification_preferences"), ("insert", "notifications"), ("insert", "events")]
    items = (await NotificationStore(db).list_own(ALICE)).items
    replay, _ = await EventStore(db, ttl_s=60).after(["user:acme:alice"], "0", limit=10)
    assert [item.id for item in items] == [event.id]
    assert [recorded.data["id"] for recorded in replay] == [event.id]
    created = [heard_event for heard_event in harness.heard if heard_event.type == EventType.NOTIFICATION_CREATED]
    assert [announced.id for announced in created] == [replay[0].id, replay[0].id]


async def test_a_type_enabled_elsewhere_is_noticed_once_the_cache_expires(db: Database, harness: Harness) -> None:
    # Given the notifier saw that nobody wants starts
    await harness.notifier.handle([job_event(EventType.JOB_STARTED, "alice")])
    # When alice asks for them through another process's gateway (nothing tells this notifier)
    websocket = WebSocketPreference(events=[NotifiableEvent.JOB_STARTED])
    await PreferenceStore(db).put("acme", "alice", NotificationPreferences(websocket=websocket))
    before_expiry, after_expiry = job_event(EventType.JOB_STARTED, "alice"), job_event(EventType.JOB_STARTED, "alice")
    harness.clock[0] += LONG_TTL_S - 0.001
    await harness.notifier.handle([before_expiry])
    harness.clock[0] += 0.001
    await harness.notifier.handle([after_expiry])
    # Then a start after the expiry notifies her (one before it may not: that is the stated delay)
    items = (await NotificationStore(db).list_own(ALICE)).items
    assert [item.id for item in items] == [after_expiry.id]


async def test_the_gateway_forgetting_a_user_makes_the_next_event_read_again(db: Database, harness: Harness) -> None:
    # Given the notifier cached that nobody wants starts, and alice's defaults
    await harness.notifier.handle([job_event(EventType.JOB_STARTED, "alice")])
    await harness.notifier.handle([completed_event("alice")])
    # When alice enables starts, and the gateway of the notifier's process forgets what it knew
    websocket = WebSocketPreference(events=[NotifiableEvent.JOB_STARTED])
    await PreferenceStore(db).put("acme", "alice", NotificationPreferences(websocket=websocket))
    harness.notifier.preferences.forget("acme", "alice")
    started = job_event(EventType.JOB_STARTED, "alice")
    await harness.notifier.handle([started])
    # Then her very next start notifies her, long before the expiry
    items = (await NotificationStore(db).list_own(ALICE)).items
    assert items[0].id == started.id and items[0].event_type == NotifiableEvent.JOB_STARTED


async def test_the_cache_keeps_only_the_most_recently_used_users(monitored: tuple[Database, CommandLog]) -> None:
    # Given a cache with room for two users, which has read u1, u2 and u3 in turn
    db, log = monitored
    cache = PreferenceCache(PreferenceStore(db), ttl_s=LONG_TTL_S, max_users=2)
    for user in ("u1", "u2", "u3"):
        await cache.get("acme", user)
    # When the three are asked for again, the least recently used first
    with log.counting() as commands:
        for user in ("u3", "u2"):
            await cache.get("acme", user)
        kept = len(commands)
        await cache.get("acme", "u1")
    # Then u2 and u3 came from the cache, and u1, dropped for u3, was read again
    assert kept == 0 and len(commands) == 1
