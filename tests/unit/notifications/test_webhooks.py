"""Webhooks: what ``verify_signature`` accepts and refuses, and which destinations a webhook may reach."""

from __future__ import annotations

import time

import pytest

from engineroom.models.event import EventType, new_event
from engineroom.models.notification import NotificationChannel
from engineroom.notifications.errors import DeliveryRefused
from engineroom.notifications.notifier import build_notification
from engineroom.notifications.webhooks import check_destination, post_webhook, sign, verify_signature
from tests.conftest import WebhookReceiver

SECRET = "s3cr3t"
BODY = b'{"id":"01ABC","event_type":"job.completed"}'


def test_a_fresh_signature_of_the_same_body_and_secret_verifies() -> None:
    assert verify_signature(SECRET, sign(SECRET, BODY), BODY)


@pytest.mark.parametrize(
    ("secret", "body"),
    [("another", BODY), (SECRET, BODY + b" "), (SECRET, BODY.replace(b"completed", b"failed"))],
)
def test_another_secret_or_a_changed_body_does_not_verify(secret: str, body: bytes) -> None:
    assert not verify_signature(secret, sign(SECRET, BODY), body)


def test_an_old_signature_is_refused_as_a_replay() -> None:
    now = time.time()
    header = sign(SECRET, BODY, timestamp_s=int(now) - 301)
    assert not verify_signature(SECRET, header, BODY, now=now)
    assert verify_signature(SECRET, header, BODY, now=now, tolerance_s=600)


def test_the_timestamp_is_signed_too() -> None:
    header = sign(SECRET, BODY, timestamp_s=1_700_000_000)
    forged = header.replace("t=1700000000", f"t={int(time.time())}")
    assert not verify_signature(SECRET, forged, BODY)


@pytest.mark.parametrize("header", ["", "v1=abc", "t=123", "t=abc,v1=00", "garbage"])
def test_malformed_headers_do_not_verify(header: str) -> None:
    assert not verify_signature(SECRET, header, BODY)


NOTIFICATION = build_notification(
    new_event(EventType.JOB_COMPLETED, tenant_id="acme", user_id="alice", job_id="J", data={}),
    [NotificationChannel.WEBHOOK],
)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.7/hook",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata service
        "http://[::1]/hook",
        "http://[fd00::1]/hook",
        "http://0.0.0.0/hook",
    ],
)
def test_a_webhook_to_a_non_public_address_is_refused(url: str) -> None:
    with pytest.raises(DeliveryRefused, match="not a public address"):
        check_destination(url)


def test_a_webhook_to_a_public_address_passes_the_check() -> None:
    check_destination("https://93.184.215.14/hook")  # a literal address: no DNS needed
    check_destination("https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/hook")


def test_a_refused_webhook_never_connects_unless_private_addresses_are_allowed(
    webhook_receiver: WebhookReceiver,
) -> None:
    with pytest.raises(DeliveryRefused, match="ENGINEROOM_WEBHOOK_ALLOW_PRIVATE"):
        post_webhook(webhook_receiver.url, SECRET, NOTIFICATION, timeout_s=5)
    assert webhook_receiver.calls == []
    assert post_webhook(webhook_receiver.url, SECRET, NOTIFICATION, timeout_s=5, allow_private=True) == 200
    assert len(webhook_receiver.calls) == 1
