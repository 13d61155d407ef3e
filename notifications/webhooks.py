"""Webhooks: the signed JSON POST to a user's URL, and ``verify_signature`` for receivers.

``X-Engineroom-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``: the timestamp is
signed with the body, so a captured request cannot be replayed after ``tolerance_s`` (Stripe's scheme).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time

import httpx

from engineroom.models.notification import NotificationDocument, NotificationPublic
from engineroom.notifications.errors import DeliveryError, DeliveryRefused

SIGNATURE_HEADER = "X-Engineroom-Signature"
EVENT_HEADER = "X-Engineroom-Event"
#: The notification id: the same on every retry of one delivery, so receivers can drop repeats.
DELIVERY_HEADER = "X-Engineroom-Delivery"
#: How old a signature ``verify_signature`` accepts by default, in seconds.
DEFAULT_TOLERANCE_S = 300
#: Statuses worth another attempt besides 5xx: request timeout, too many requests.
_RETRYABLE_STATUSES = frozenset({408, 429})


def _digest(secret: str, timestamp_s: int, body: bytes) -> str:
    signed = str(timestamp_s).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, *, timestamp_s: int | None = None) -> str:
    """The ``X-Engineroom-Signature`` value for ``body`` sent now (or at ``timestamp_s``)."""
    timestamp_s = int(time.time()) if timestamp_s is None else timestamp_s
    return f"t={timestamp_s},v1={_digest(secret, timestamp_s, body)}"


def verify_signature(
    secret: str, header: str, body: bytes, *, tolerance_s: float = DEFAULT_TOLERANCE_S, now: float | None = None
) -> bool:
    """Whether ``header`` signs exactly ``body`` with ``secret``, at most ``tolerance_s`` seconds from ``now``.

    Any ``v1`` entry may match (a sender rotating secrets may send several); comparison is constant-time.
    """
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = _digest(secret, timestamp, body)
    return any(hmac.compare_digest(expected, signature) for signature in signatures)


def webhook_body(notification: NotificationDocument) -> bytes:
    """The JSON a webhook receives: the notification as its owner sees it through the API, minus the delivery
    records (which this very request is about to change)."""
    public = NotificationPublic.from_document(notification).model_dump(mode="json", exclude={"deliveries"})
    return json.dumps(public, separators=(",", ":"), sort_keys=True).encode()


def check_destination(url: str) -> None:
    """Refuse a URL whose host resolves to a loopback, private, link-local or otherwise non-public address.

    Webhook URLs are chosen by users and fetched from inside the cluster: without this check one could make
    workers POST to the cloud metadata service or an internal admin port (server-side request forgery). The
    check resolves the name once; a DNS answer that changes between it and the connection is not caught.

    Raises:
      DeliveryRefused: the host resolves to a non-public address.
      DeliveryError: the host does not resolve (may be a passing DNS failure).
    """
    host = httpx.URL(url).host
    try:
        resolved = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise DeliveryError(f"cannot resolve {host!r}: {exc}") from exc
    for *_, sockaddr in resolved:
        address = ipaddress.ip_address(sockaddr[0])
        if not address.is_global:
            raise DeliveryRefused(
                f"{host} resolves to {address}, which is not a public address; webhooks to private networks "
                "are off unless ENGINEROOM_WEBHOOK_ALLOW_PRIVATE=true"
            )


def post_webhook(
    url: str, secret: str, notification: NotificationDocument, *, timeout_s: float, allow_private: bool = False
) -> int:
    """POST the signed notification to ``url``; returns the (2xx) status.

    Redirects are not followed: a signed body goes only where the user said. Unless ``allow_private``, a URL
    that resolves to a non-public address is refused before any connection (``check_destination``).

    Raises:
      DeliveryRefused: a 3xx or 4xx answer (but 408 and 429), or a non-public destination.
      DeliveryError: a 5xx, 408 or 429 answer, a timeout or no connection.
    """
    if not allow_private:
        check_destination(url)
    body = webhook_body(notification)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "engineroom-webhooks",
        SIGNATURE_HEADER: sign(secret, body),
        EVENT_HEADER: str(notification.event_type),
        DELIVERY_HEADER: notification.id,
    }
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
            response = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"POST {url} failed: {exc!r}") from exc
    status = response.status_code
    if 200 <= status < 300:
        return status
    detail = f"POST {url} answered {status}"
    if status >= 500 or status in _RETRYABLE_STATUSES:
        raise DeliveryError(detail, status=status)
    raise DeliveryRefused(detail, status=status)
