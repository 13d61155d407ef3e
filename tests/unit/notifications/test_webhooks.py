"""Webhook signatures: what ``verify_signature`` accepts and refuses."""

from __future__ import annotations

import time

import pytest

from engineroom.notifications.webhooks import sign, verify_signature

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
