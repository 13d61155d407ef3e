"""Email and webhook deliveries: one Dramatiq actor per channel on the notifications queue. Messages carry the
notification id only; every attempt is recorded on the notification.

Retries are Dramatiq's own ``Retries`` (``max_retries``, ``min_backoff``, ``max_backoff`` from Settings): unlike
jobs, a delivery has no document state worth a scheduler round trip, and its backoffs stay short (dramatiq#827
is why they must: delayed messages wait unacknowledged in worker memory).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from dramatiq import Actor, Broker
from dramatiq.middleware import CurrentMessage

from engineroom.actors.loop_stores import LoopStores, on_worker_lifecycle
from engineroom.core.clock import utcnow
from engineroom.core.config import Settings
from engineroom.models.notification import (
    DELIVERED_CHANNELS,
    FINAL_DELIVERY_STATES,
    DeliveryAttempt,
    DeliveryState,
    NotificationChannel,
    NotificationDocument,
    PreferencesDocument,
)
from engineroom.notifications.email import SmtpServer, compose_email, parse_smtp_url, send_email
from engineroom.notifications.errors import DeliveryError, DeliveryRefused
from engineroom.notifications.notifier import delivery_actor_name
from engineroom.notifications.webhooks import post_webhook
from engineroom.store.client import Database
from engineroom.store.notifications import NotificationStore
from engineroom.store.preferences import PreferenceStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryStores:
    notifications: NotificationStore
    preferences: PreferenceStore

    @classmethod
    def of(cls, db: Database) -> DeliveryStores:
        return cls(NotificationStore(db), PreferenceStore(db))


class Deliverer:
    """Sends one notification over one channel per call; one per worker process, shared by its threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.smtp: SmtpServer | None = parse_smtp_url(settings.smtp_url) if settings.smtp_url else None
        self._stores = LoopStores(settings, DeliveryStores.of)

    def close(self) -> None:
        self._stores.close()

    def stop_waiting_after(self, seconds: float) -> None:
        """The worker is stopping: database calls of deliveries, waiting or new, give up ``seconds`` from now."""
        self._stores.stop_waiting_after(seconds)

    def deliver(self, channel: NotificationChannel, notification_id: str) -> None:
        """Attempt the delivery unless it already succeeded or failed for good (a repeated message sends nothing
        twice), and record the attempt.

        Raises:
          DeliveryRefused: it cannot succeed (Dramatiq fails the message at once).
          DeliveryError: it may succeed later (Dramatiq retries the message after a backoff).
        """
        notification = self._stores.call(lambda stores: stores.notifications.get(notification_id))
        delivery = None if notification is None else notification.deliveries.get(channel)
        if notification is None or delivery is None or delivery.state in FINAL_DELIVERY_STATES:
            logger.info("nothing to deliver by %s for notification %s", channel, notification_id)
            return
        owner = notification
        preferences = self._stores.call(lambda stores: stores.preferences.get_or_create(owner.tenant_id, owner.user_id))
        try:
            status = self._attempt(channel, notification, preferences)
        except DeliveryError as exc:
            final = isinstance(exc, DeliveryRefused) or self._is_last_attempt()
            failure = DeliveryAttempt(at=utcnow(), ok=False, status=exc.status, error=exc.detail)
            self._record(channel, notification_id, failure, DeliveryState.FAILED if final else DeliveryState.RETRYING)
            raise
        self._record(
            channel, notification_id, DeliveryAttempt(at=utcnow(), ok=True, status=status), DeliveryState.DELIVERED
        )

    def _attempt(
        self, channel: NotificationChannel, notification: NotificationDocument, preferences: PreferencesDocument
    ) -> int | None:
        """One attempt; returns the webhook's HTTP status (``None`` for email)."""
        timeout_s = self.settings.delivery_timeout_s
        if channel == NotificationChannel.EMAIL:
            if self.smtp is None:
                raise DeliveryRefused("SMTP is not configured (ENGINEROOM_SMTP_URL)")
            if preferences.email.address is None:
                raise DeliveryRefused("no email address in the notification preferences")
            message = compose_email(notification, to=preferences.email.address, sender=self.settings.smtp_from)
            send_email(self.smtp, message, timeout_s=timeout_s)
            return None
        if preferences.webhook.url is None:
            raise DeliveryRefused("no webhook url in the notification preferences")
        return post_webhook(
            preferences.webhook.url,
            preferences.webhook_secret,
            notification,
            timeout_s=timeout_s,
            allow_private=self.settings.webhook_allow_private,
        )

    def _is_last_attempt(self) -> bool:
        """Whether Dramatiq's ``Retries`` will give up after this attempt (it counts retries in the message)."""
        message = CurrentMessage.get_current_message()
        retries = 0 if message is None else int(message.options.get("retries", 0))
        return retries >= self.settings.delivery_max_retries

    def _record(
        self, channel: NotificationChannel, notification_id: str, attempt: DeliveryAttempt, state: DeliveryState
    ) -> None:
        self._stores.call(lambda stores: stores.notifications.record_attempt(notification_id, channel, attempt, state))


def _deliver_by(deliverer: Deliverer, channel: NotificationChannel) -> Callable[[str], None]:
    def deliver(notification_id: str) -> None:
        deliverer.deliver(channel, notification_id)

    deliver.__name__ = deliver.__qualname__ = delivery_actor_name(channel)
    return deliver


def declare_delivery_actors(
    broker: Broker, settings: Settings, deliverer: Deliverer
) -> dict[NotificationChannel, Actor[[str], None]]:
    """Declare the email and webhook actors on ``broker``'s notifications queue."""
    on_worker_lifecycle(broker, shutdown=deliverer.close)
    options = {
        "max_retries": settings.delivery_max_retries,
        "min_backoff": int(settings.delivery_min_backoff_s * 1000),
        "max_backoff": int(settings.delivery_max_backoff_s * 1000),
        # Refusals (a 4xx, no address) fail the message at once instead of being retried.
        "throws": (DeliveryRefused,),
    }
    return {
        channel: Actor(
            _deliver_by(deliverer, channel),
            broker=broker,
            actor_name=delivery_actor_name(channel),
            queue_name=settings.notifications_queue,
            priority=0,
            options=options,
        )
        for channel in DELIVERED_CHANNELS
    }
