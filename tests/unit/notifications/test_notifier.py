"""The notifier on SecantusDB: at-least-once events make one notification and one delivery message each."""

from __future__ import annotations

from dramatiq.brokers.stub import StubBroker

from engineroom.core.broker import Enqueuer
from engineroom.core.config import Settings
from engineroom.core.ids import new_id
from engineroom.models.event import Event, EventType, new_event
from engineroom.models.notification import DeliveryState, EmailPreference, NotificationPreferences
from engineroom.models.principal import Principal
from engineroom.notifications.bus import LocalEventBus
from engineroom.notifications.notifier import Notifier
from engineroom.notifications.publisher import AsyncEventPublisher
from engineroom.store.client import Database
from engineroom.store.events import EventStore
from engineroom.store.notifications import NotificationStore
from engineroom.store.preferences import PreferenceStore

ALICE = Principal(user_id="alice", tenant_id="acme")


def completed_event(user_id: str = "alice") -> Event:
    data = {"state": "completed", "task": "general.demo", "engine": "general", "result": 1}
    return new_event(EventType.JOB_COMPLETED, tenant_id="acme", user_id=user_id, job_id=new_id(), data=data)


async def test_a_redelivered_event_makes_one_notification_and_one_email_message(
    db: Database, settings: Settings
) -> None:
    # Given alice wants emails, and a notifier whose broker and bus are in process
    email = EmailPreference(enabled=True, address="alice@example.com")
    await PreferenceStore(db).put("acme", "alice", NotificationPreferences(email=email))
    broker = StubBroker()
    broker.declare_queue(settings.notifications_queue)
    bus = LocalEventBus()
    heard: list[Event] = []
    bus.subscribe(heard.append)
    publisher = AsyncEventPublisher(bus, EventStore(db, ttl_s=60))
    enqueuer = Enqueuer(broker, settings)
    notifier = Notifier(settings, NotificationStore(db), PreferenceStore(db), publisher, enqueuer)
    event = completed_event()
    try:
        # When the same event arrives twice (RabbitMQ delivers at least once)
        await notifier.handle(event)
        await notifier.handle(event)
    finally:
        publisher.close()
        enqueuer.close()
    # Then one notification, named after the event, with its email queued once
    page = await NotificationStore(db).list_own(ALICE)
    assert [item.id for item in page.items] == [event.id]
    assert page.items[0].deliveries["email"].state == DeliveryState.QUEUED
    assert broker.queues[settings.notifications_queue].qsize() == 1
    # and its announcement repeated under one id, which gateways drop as a repeat
    created = [heard_event for heard_event in heard if heard_event.type == EventType.NOTIFICATION_CREATED]
    assert len(created) == 2 and len({announced.id for announced in created}) == 1


async def test_events_of_other_kinds_or_without_an_owner_notify_nobody(db: Database, settings: Settings) -> None:
    broker = StubBroker()
    publisher = AsyncEventPublisher(LocalEventBus(), EventStore(db, ttl_s=60))
    enqueuer = Enqueuer(broker, settings)
    notifier = Notifier(settings, NotificationStore(db), PreferenceStore(db), publisher, enqueuer)
    progress = new_event(EventType.JOB_PROGRESS, tenant_id="acme", user_id="alice", job_id=new_id(), data={})
    ownerless = completed_event().model_copy(update={"user_id": None})
    try:
        for event in (progress, ownerless):
            await notifier.handle(event)
    finally:
        publisher.close()
        enqueuer.close()
    assert (await NotificationStore(db).list_own(ALICE)).items == []
