"""Notifications across real processes: ``engineroom api``, ``engineroom worker`` and ``engineroom scheduler`` (which
runs the notifier) against SecantusDB and the real RabbitMQ, mailing a real SMTP server (aiosmtpd) and posting to a
local HTTP server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from engineroom.notifications.webhooks import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, verify_signature

if TYPE_CHECKING:
    from tests.conftest import MailSink, WebhookReceiver
    from tests.e2e.conftest import Stack

TokenFor = Callable[..., str]
FAST_DELIVERY = {
    "ENGINEROOM_DELIVERY_MIN_BACKOFF_S": "0.2",
    "ENGINEROOM_DELIVERY_MAX_BACKOFF_S": "1",
    "ENGINEROOM_DELIVERY_MAX_RETRIES": "3",
}
TIMEOUT_S = 30.0
#: How long the notifier (in the scheduler process) keeps preferences: the default, set here so that the runner's
#: environment cannot change what the test promises.
PREFERENCES_CACHE_S = 5.0


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


@pytest.fixture
def running(stack: Stack, mail_sink: MailSink, token_for: TokenFor) -> Iterator[httpx.Client]:
    """api + worker + scheduler, mailing ``mail_sink``; an HTTP client signed in as alice."""
    stack.env.update(
        {
            **FAST_DELIVERY,
            "ENGINEROOM_SMTP_URL": mail_sink.url,
            "ENGINEROOM_NOTIFICATION_PREFERENCES_CACHE_S": str(PREFERENCES_CACHE_S),
        }
    )
    base_url = stack.start_api()
    stack.start_worker()
    stack.start_scheduler()
    with httpx.Client(base_url=base_url, headers=auth(token_for("alice", "acme")), timeout=10) as http:
        yield http


def submit_and_wait(http: httpx.Client) -> str:
    body = {"task": "general.demo", "payload": {"duration_s": 0.1, "steps": 1, "result": 7}}
    response = http.post("/jobs", json=body, params={"wait": 20})
    assert response.status_code == 200 and response.json()["state"] == "completed", response.text
    job_id: str = response.json()["id"]
    return job_id


def completion_of(http: httpx.Client, job_id: str, channel: str, state: str) -> Any:
    """The job's completion notification once its ``channel`` delivery reached ``state``."""
    for item in http.get("/notifications").json()["items"]:
        if item["job_id"] == job_id and item["event_type"] == "job.completed":
            return item["deliveries"][channel]["state"] == state and item
    return None


def notified_of(http: httpx.Client, job_id: str) -> list[str]:
    """The event types the job's notifications are about, sorted."""
    return sorted(item["event_type"] for item in http.get("/notifications").json()["items"] if item["job_id"] == job_id)


def test_starts_asked_for_through_the_api_notify_once_the_notifiers_cache_expires(running: httpx.Client) -> None:
    # Given the notifier handled a job of alice's on the defaults: it has cached them, and that nobody wants starts
    first = submit_and_wait(running)
    wait_for(lambda: notified_of(running, first) == ["job.completed"], "the first job's completion notified")
    # When she asks for starts through the gateway (another process than the notifier's)
    websocket = {"enabled": True, "events": ["job.started", "job.completed"]}
    assert running.put("/notifications/preferences", json={"websocket": websocket}).status_code == 200
    time.sleep(PREFERENCES_CACHE_S)  # not a wait for a state: the expiry is the promise under test
    second = submit_and_wait(running)
    # Then a job started once the expiry has passed notifies her of its start too
    wait_for(lambda: notified_of(running, second) == ["job.completed", "job.started"], "the second job's start")
    assert notified_of(running, first) == ["job.completed"]


def test_a_completed_job_is_emailed_to_the_address_in_the_preferences(
    running: httpx.Client, mail_sink: MailSink
) -> None:
    email = {"enabled": True, "address": "alice@example.com", "events": ["job.completed"]}
    assert running.put("/notifications/preferences", json={"email": email}).status_code == 200
    job_id = submit_and_wait(running)
    notification = wait_for(lambda: completion_of(running, job_id, "email", "delivered"), "the email delivered")
    assert len(mail_sink.messages) == 1
    recipients, message = mail_sink.messages[0]
    assert recipients == ["alice@example.com"] and message["To"] == "alice@example.com"
    assert "general.demo" in message["Subject"] and "completed" in message["Subject"]
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None
    assert job_id in text.get_content() and job_id in html.get_content()
    assert html.get_content().lstrip().startswith("<html>")
    attempts = notification["deliveries"]["email"]["attempts"]
    assert len(attempts) == 1 and attempts[0]["ok"] is True
    assert notification["channels"] == ["websocket", "email"]


def test_a_webhook_is_signed_retried_after_a_500_and_shows_both_attempts(
    running: httpx.Client, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.statuses = [500]
    webhook = {"enabled": True, "url": webhook_receiver.url, "events": ["job.completed"]}
    preferences = running.put("/notifications/preferences", json={"webhook": webhook}).json()
    job_id = submit_and_wait(running)
    notification = wait_for(lambda: completion_of(running, job_id, "webhook", "delivered"), "the webhook delivered")
    attempts = notification["deliveries"]["webhook"]["attempts"]
    assert [(attempt["ok"], attempt["status"]) for attempt in attempts] == [(False, 500), (True, 200)]
    assert len(webhook_receiver.calls) == 2
    for call in webhook_receiver.calls:
        assert verify_signature(preferences["webhook_secret"], call.headers[SIGNATURE_HEADER], call.body)
        assert call.headers[EVENT_HEADER] == "job.completed" and call.headers[DELIVERY_HEADER] == notification["id"]
        assert json.loads(call.body)["job_id"] == job_id
