"""Notifications: the stored document, its public view and page, delivery records, and per-user preferences."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Deliberately loose: one ``@``, no spaces, a dot in the domain. The SMTP server is the real judge.
_EMAIL_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class NotificationChannel(StrEnum):
    """Where a notification goes."""

    #: The in-app inbox (``GET /notifications``) plus a ``notification.created`` event on the owner's sockets.
    WEBSOCKET = "websocket"
    #: An email through ``ENGINEROOM_SMTP_URL``, sent by a delivery actor.
    EMAIL = "email"
    #: A signed JSON POST to the user's URL, sent by a delivery actor.
    WEBHOOK = "webhook"


#: The channels a delivery actor sends to (the websocket channel is done when the notification is stored).
DELIVERED_CHANNELS = (NotificationChannel.EMAIL, NotificationChannel.WEBHOOK)


class NotifiableEvent(StrEnum):
    """The event types a user can be notified of (a subset of ``EventType``)."""

    JOB_STARTED = "job.started"
    JOB_COMPLETED = "job.completed"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"
    WORKFLOW_COMPLETED = "workflow.completed"
    WORKFLOW_FAILED = "workflow.failed"


class DeliveryState(StrEnum):
    """How far an email or webhook delivery got."""

    #: Stored with the notification; its message is not known to be on the delivery queue yet.
    PENDING = "pending"
    #: On the delivery queue.
    QUEUED = "queued"
    #: An attempt failed; Dramatiq's ``Retries`` will try again after a backoff.
    RETRYING = "retrying"
    DELIVERED = "delivered"
    #: Out of attempts, or refused for good (a 4xx answer, no address, SMTP not configured).
    FAILED = "failed"


#: A delivery in one of these states is never attempted again (so a repeated message sends nothing twice).
FINAL_DELIVERY_STATES = frozenset({DeliveryState.DELIVERED, DeliveryState.FAILED})


class DeliveryAttempt(BaseModel):
    at: datetime
    ok: bool
    #: The webhook's HTTP status, or the SMTP reply code when the server refused.
    status: int | None = None
    error: str | None = None


class Delivery(BaseModel):
    state: DeliveryState = DeliveryState.PENDING
    attempts: list[DeliveryAttempt] = Field(default_factory=list)


class _NotificationFields(BaseModel):
    #: The id of the event it is about: time-sortable like every id, and a redelivered event collides on it.
    id: str
    event_type: NotifiableEvent
    title: str
    message: str
    job_id: str | None = None
    workflow_id: str | None = None
    #: The source event's ``data`` (state, task, result or error…).
    data: dict[str, Any] = Field(default_factory=dict)
    channels: list[NotificationChannel]
    created_at: datetime
    read_at: datetime | None = None
    #: Per delivered channel (``email``, ``webhook``): its state and every attempt.
    deliveries: dict[NotificationChannel, Delivery] = Field(default_factory=dict)


class NotificationDocument(_NotificationFields):
    """A notification as stored in the ``notifications`` collection; only store/ and notifications/ handle it."""

    tenant_id: str
    user_id: str
    #: The id of its ``notification.created`` event, kept so that handling the source event again re-announces
    #: it under the same id (gateways drop the repeat).
    created_event_id: str


class NotificationPublic(_NotificationFields):
    """A notification as its owner sees it."""

    read: bool

    @classmethod
    def from_document(cls, document: NotificationDocument) -> NotificationPublic:
        fields = document.model_dump(exclude={"tenant_id", "user_id", "created_event_id"})
        return cls.model_validate({**fields, "read": document.read_at is not None})


class NotificationPage(BaseModel):
    """One page of ``GET /notifications``, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""

    items: list[NotificationPublic]
    next_cursor: str | None = None
    #: All of the caller's unread notifications, whatever the page (the bell's number).
    unread_count: int = 0


class ReadAllResult(BaseModel):
    #: Notifications that were unread and are read now.
    marked: int


def _default_events() -> list[NotifiableEvent]:
    """Every notifiable event but ``job.started``: a start is seldom news (the job's own events tell watchers),
    and notifying it doubled the notifications, and their writes, of every job. Users may ask for it."""
    return [kind for kind in NotifiableEvent if kind != NotifiableEvent.JOB_STARTED]


class ChannelPreference(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    events: list[NotifiableEvent] = Field(default_factory=_default_events)

    def wants(self, event_type: str) -> bool:
        return self.enabled and event_type in self.events


class WebSocketPreference(ChannelPreference):
    enabled: bool = True


class EmailPreference(ChannelPreference):
    address: str | None = Field(None, max_length=320, examples=["alice@example.com"])

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL_ADDRESS.match(value):
            raise ValueError(f"{value!r} is not an email address")
        return value

    @model_validator(mode="after")
    def _needs_address_when_enabled(self) -> EmailPreference:
        if self.enabled and self.address is None:
            raise ValueError("email needs an address when enabled")
        return self


class WebhookPreference(ChannelPreference):
    url: str | None = Field(None, max_length=2000, examples=["https://example.com/engineroom-hook"])

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("webhook url must be an http:// or https:// URL with a host")
        return value

    @model_validator(mode="after")
    def _needs_url_when_enabled(self) -> WebhookPreference:
        if self.enabled and self.url is None:
            raise ValueError("webhook needs a url when enabled")
        return self


class NotificationPreferences(BaseModel):
    """Per channel, whether it is on and which events it wants."""

    websocket: WebSocketPreference = Field(default_factory=WebSocketPreference)
    email: EmailPreference = Field(default_factory=EmailPreference)
    webhook: WebhookPreference = Field(default_factory=WebhookPreference)

    def channels_for(self, event_type: str) -> list[NotificationChannel]:
        """The channels that want this event type, in a fixed order."""
        wanted = {
            NotificationChannel.WEBSOCKET: self.websocket.wants(event_type),
            NotificationChannel.EMAIL: self.email.wants(event_type),
            NotificationChannel.WEBHOOK: self.webhook.wants(event_type),
        }
        return [channel for channel, wants in wanted.items() if wants]


class NotificationPreferencesUpdate(NotificationPreferences):
    """Body of ``PUT /notifications/preferences``. An unknown field is refused (a misspelt channel would otherwise
    leave the user believing it is set); ``webhook_secret`` is accepted so a ``GET`` body can be sent back, and
    ignored: the secret is the server's."""

    model_config = ConfigDict(extra="forbid")

    webhook_secret: str | None = Field(default=None, exclude=True)


class NotificationPreferencesPublic(NotificationPreferences):
    """Preferences as their owner reads them, with the secret their webhooks are signed with."""

    webhook_secret: str


class PreferencesDocument(NotificationPreferences):
    """Preferences as stored in ``notification_preferences``, one document per user."""

    tenant_id: str
    user_id: str
    #: Made by the server the first time it is needed (``secrets.token_hex``); never set through the API.
    webhook_secret: str
    updated_at: datetime
