"""The notifier: turns job and workflow events into stored notifications, ``notification.created`` events and
email/webhook delivery messages, per each user's preferences.

It runs wherever the scheduler runs (``engineroom scheduler``, and the gateway of ``engineroom dev`` and of unit
tests), fed by the events bus's shared durable queue: any number of notifiers split the events, and events
published while none runs wait for one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from dramatiq import Message

from engineroom.core.clock import utcnow
from engineroom.core.config import Settings
from engineroom.core.ids import new_id
from engineroom.messaging.broker import Enqueuer
from engineroom.messaging.bus import NOTIFIER_ROUTING_KEYS, EventBus, Subscription
from engineroom.models.event import Event, EventType, new_event
from engineroom.models.notification import (
    DELIVERED_CHANNELS,
    Delivery,
    DeliveryState,
    NotifiableEvent,
    NotificationChannel,
    NotificationDocument,
    NotificationPublic,
)
from engineroom.notifications.preference_cache import PreferenceCache
from engineroom.services.publisher import AsyncEventPublisher
from engineroom.store.client import Database
from engineroom.store.notifications import NotificationStore
from engineroom.store.preferences import PreferenceStore

#: Seconds the notifier waits after an event for others to share its write: a notification is for a person, to whom
#: a tenth of a second is nothing, while at 30 completions a second it makes four notifications one round trip.
BATCH_LINGER_S = 0.1
#: Seconds the bus consumer thread waits for a batch of events to be handled on the loop before handing it back.
HANDLE_TIMEOUT_S = 30.0

_NOTIFIABLE = frozenset(str(kind) for kind in NotifiableEvent)
_OUTCOME_WORDS = {
    NotifiableEvent.JOB_STARTED: "started",
    NotifiableEvent.JOB_COMPLETED: "completed",
    NotifiableEvent.JOB_FAILED: "failed",
    NotifiableEvent.JOB_CANCELLED: "was cancelled",
    NotifiableEvent.WORKFLOW_COMPLETED: "completed",
    NotifiableEvent.WORKFLOW_FAILED: "failed",
}


def delivery_actor_name(channel: NotificationChannel) -> str:
    """The Dramatiq actor (declared in ``actors/delivery.py``) that delivers ``channel``."""
    return f"deliver_{channel}"


def delivery_message(settings: Settings, channel: NotificationChannel, notification_id: str) -> Message[None]:
    """The message asking a worker to deliver one notification by email or webhook: its id only."""
    return Message(
        queue_name=settings.notifications_queue,
        actor_name=delivery_actor_name(channel),
        args=(notification_id,),
        kwargs={},
        options={},
    )


def describe(event: Event) -> tuple[str, str]:
    """A notification's title and message for the event, e.g. ``Job general.demo completed``."""
    kind = NotifiableEvent(event.type)
    outcome = _OUTCOME_WORDS[kind]
    if event.workflow_id is not None and event.job_id is None:
        name = event.data.get("name") or event.workflow_id
        return f"Workflow {name} {outcome}", f"Workflow {name} ({event.workflow_id}) {outcome}."
    task = event.data.get("task", "job")
    title = f"Job {task} {outcome}"
    message = f"Job {event.job_id} ({task}) {outcome}."
    error = event.data.get("error")
    if kind == NotifiableEvent.JOB_FAILED and isinstance(error, dict):
        message += f" {error.get('type', 'Error')}: {error.get('message', '')}".rstrip()
    reason = event.data.get("reason")
    if kind == NotifiableEvent.JOB_CANCELLED and isinstance(reason, str):
        message += f" Reason: {reason}"
    return title, message


def build_notification(event: Event, channels: list[NotificationChannel]) -> NotificationDocument:
    """The notification of ``event`` for its owner, on ``channels``; its id is the event's."""
    assert event.user_id is not None  # only owner events are notifiable (checked by the caller)
    title, message = describe(event)
    deliveries = {channel: Delivery() for channel in DELIVERED_CHANNELS if channel in channels}
    return NotificationDocument(
        id=event.id,
        tenant_id=event.tenant_id,
        user_id=event.user_id,
        event_type=NotifiableEvent(event.type),
        title=title,
        message=message,
        job_id=event.job_id,
        workflow_id=event.workflow_id,
        data=event.data,
        channels=channels,
        created_at=utcnow(),
        deliveries=deliveries,
        created_event_id=new_id(),
    )


def created_event(notification: NotificationDocument) -> Event:
    """``notification.created`` for the owner's sockets, under the id stored with the notification.

    The job and workflow ids travel in ``data`` only, not in the envelope: the envelope's ``job_id`` means "an
    event of this job's life", which a notification is not.
    """
    data: dict[str, Any] = NotificationPublic.from_document(notification).model_dump(mode="json")
    event = new_event(
        EventType.NOTIFICATION_CREATED, tenant_id=notification.tenant_id, user_id=notification.user_id, data=data
    )
    return event.model_copy(update={"id": notification.created_event_id})


class Notifier:
    """Handles the events the bus delivered together, idempotently: a redelivered event finds its notification
    stored already and only finishes what the first run may not have (announcing it, queueing its deliveries).

    What it costs: an event of a type nobody can want now (``job.started`` unless someone asked for it) is dropped
    before any read, and preferences come from a ``PreferenceCache``; the event itself names the owner, job, task
    and workflow, so no job is read. The notifications of a batch then cost one write, with their
    ``notification.created`` records in the same round trip.
    """

    def __init__(
        self,
        settings: Settings,
        notifications: NotificationStore,
        preferences: PreferenceCache,
        publisher: AsyncEventPublisher,
        enqueuer: Enqueuer,
    ) -> None:
        self.settings = settings
        self.notifications = notifications
        self.preferences = preferences
        self.publisher = publisher
        self.enqueuer = enqueuer

    async def handle(self, events: Sequence[Event]) -> None:
        """Notify each event's owner on the channels that want it, if any.

        Preferences changed since an event's first delivery decide a redelivery too: a channel turned off meanwhile
        gets nothing more.

        Raises:
          StoreUnavailable, BrokerUnavailable: the events should come back later.
        """
        wanted = [notification for event in events if (notification := await self._notification_of(event)) is not None]
        if not wanted:
            return
        for notification in await self._store(wanted):
            for channel, delivery in notification.deliveries.items():
                if delivery.state == DeliveryState.PENDING:
                    await self.enqueuer.send(delivery_message(self.settings, channel, notification.id))
                    await self.notifications.move_delivery(
                        notification.id, channel, expected=DeliveryState.PENDING, to=DeliveryState.QUEUED
                    )

    async def _notification_of(self, event: Event) -> NotificationDocument | None:
        """The notification ``event`` makes, or None if nobody wants one."""
        if str(event.type) not in _NOTIFIABLE or event.user_id is None or event.audience != "owner":
            return None
        if not await self.preferences.may_want(str(event.type)):
            return None
        channels = (await self.preferences.get(event.tenant_id, event.user_id)).channels_for(event.type)
        return build_notification(event, channels) if channels else None

    async def _store(self, notifications: list[NotificationDocument]) -> list[NotificationDocument]:
        """Store and announce ``notifications``; where an earlier delivery of an event stored its notification
        already, announce that one again instead (under the id stored with it: gateways drop the repeat). The
        notifications stored, by this call or before; one gone meanwhile is left out."""
        announcements = [
            created_event(notification) if NotificationChannel.WEBSOCKET in notification.channels else None
            for notification in notifications
        ]
        inserted = await self.notifications.insert_all(
            list(zip(notifications, announcements, strict=True)), self.publisher.events
        )
        await self.publisher.publish_recorded(
            [announcement for announcement, new in zip(announcements, inserted, strict=True) if new and announcement]
        )
        stored = []
        for notification, new in zip(notifications, inserted, strict=True):
            if new:
                stored.append(notification)
            elif (existing := await self.notifications.get(notification.id)) is not None:
                if NotificationChannel.WEBSOCKET in existing.channels:
                    await self.publisher.publish(created_event(existing))
                stored.append(existing)
        return stored


def start_notifier(
    settings: Settings,
    db: Database,
    bus: EventBus,
    publisher: AsyncEventPublisher,
    enqueuer: Enqueuer,
    preferences: PreferenceCache | None = None,
) -> Subscription:
    """Feed events from the bus's shared notifier queue to a ``Notifier`` on the running loop; close the returned
    subscription (off the loop: it waits for the handler in flight) to stop. Pass the ``preferences`` the gateway
    of this process forgets users from on ``PUT``, if there is one."""
    loop = asyncio.get_running_loop()
    if preferences is None:
        preferences = PreferenceCache.from_settings(PreferenceStore(db), settings)
    notifier = Notifier(settings, NotificationStore(db), preferences, publisher, enqueuer)

    def handle(events: list[Event]) -> None:
        # On the bus consumer thread: the events are acknowledged when this returns, so wait for the loop's answer.
        asyncio.run_coroutine_threadsafe(notifier.handle(events), loop).result(timeout=HANDLE_TIMEOUT_S)

    return bus.consume(settings.notifier_queue, handle, routing_keys=NOTIFIER_ROUTING_KEYS, linger_s=BATCH_LINGER_S)
