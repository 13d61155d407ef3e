"""Notifications through the gateway, with the notifier, a worker and the delivery actors in process."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient

from engineroom.core.config import Settings
from engineroom.notifications.webhooks import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, verify_signature
from tests.gateway import in_process_gateway

if TYPE_CHECKING:
    from tests.conftest import WebhookReceiver

TokenFor = Callable[..., str]
DEFAULT_EVENTS = ["job.completed", "job.failed", "job.cancelled", "workflow.completed", "workflow.failed"]
OUTCOMES = ["job.completed", "job.failed", "job.cancelled"]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def put_preferences(client: TestClient, token: str, **channels: Any) -> dict[str, Any]:
    response = client.put("/notifications/preferences", json=channels, headers=auth(token))
    assert response.status_code == 200, response.text
    preferences: dict[str, Any] = response.json()
    return preferences


def submit(client: TestClient, token: str, **payload: Any) -> str:
    body = {"task": "general.demo", "payload": {"duration_s": 0, "steps": 1, **payload}}
    response = client.post("/jobs", json=body, headers=auth(token))
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def notifications(client: TestClient, token: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/notifications", params=params, headers=auth(token))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 15) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def outcome_notifications(client: TestClient, token: str) -> list[dict[str, Any]]:
    """Complete, fail and cancel one job each while only outcomes notify; returns the three notifications."""
    put_preferences(client, token, websocket={"enabled": True, "events": OUTCOMES})
    completed = submit(client, token)
    failed = submit(client, token, fail="permanent")
    cancelled = client.post("/jobs", json={"task": "general.demo", "delay_s": 600}, headers=auth(token)).json()["id"]
    assert client.post(f"/jobs/{cancelled}/cancel", headers=auth(token)).status_code == 200
    found: list[dict[str, Any]] = wait_for(
        lambda: len(items := notifications(client, token)) >= 3 and items, "three notifications"
    )
    by_job = {item["job_id"]: item for item in found}
    assert set(by_job) == {completed, failed, cancelled}
    assert [by_job[job]["event_type"] for job in (completed, failed, cancelled)] == OUTCOMES
    return found


def test_completion_failure_and_cancellation_notify_as_the_preferences_ask(
    client: TestClient, token_for: TokenFor
) -> None:
    token = token_for("alice", "acme")
    found = outcome_notifications(client, token)
    # job.started is not wanted: no notification for any of the two starts.
    time.sleep(0.3)  # not an assertion: gives a stray job.started notification time to show up below
    assert len(notifications(client, token)) == 3
    assert [item["id"] for item in found] == sorted((item["id"] for item in found), reverse=True)  # newest first
    for item in found:
        assert item["channels"] == ["websocket"] and item["deliveries"] == {} and item["read"] is False
    failed = next(item for item in found if item["event_type"] == "job.failed")
    assert failed["title"] == "Job general.demo failed" and "PermanentError" in failed["message"]


def test_the_default_preferences_notify_of_outcomes_and_starts_only_when_asked(
    client: TestClient, token_for: TokenFor
) -> None:
    alice, bob = token_for("alice", "acme"), token_for("bob", "acme")
    put_preferences(client, bob, websocket={"enabled": True, "events": ["job.started", "job.completed"]})
    bobs = submit(client, bob)
    found = wait_for(lambda: len(items := notifications(client, bob)) >= 2 and items, "bob's two notifications")
    assert sorted(item["event_type"] for item in found) == ["job.completed", "job.started"]
    assert {item["job_id"] for item in found} == {bobs}
    # The in-process notifier takes events in order: once alice's completion is handled, her start was too.
    alices = submit(client, alice)
    found = wait_for(lambda: notifications(client, alice), "alice's notification")
    assert [(item["event_type"], item["job_id"]) for item in found] == [("job.completed", alices)]


def test_a_preferences_put_reaches_the_notifier_of_the_same_process_at_once(
    app_settings: Settings, token_for: TokenFor
) -> None:
    # Given a notifier that keeps preferences for ten minutes, and has cached alice's defaults and that nobody
    # wants starts (her first job's start came before its completion, and the notifier takes events in order)
    with in_process_gateway(app_settings.model_copy(update={"notification_preferences_cache_s": 600.0})) as client:
        token = token_for("alice", "acme")
        first = submit(client, token)
        wait_for(lambda: notifications(client, token), "the first job's notification")
        # When she asks for starts through this gateway, and submits again at once
        put_preferences(client, token, websocket={"enabled": True, "events": ["job.started", "job.completed"]})
        second = submit(client, token)
        # Then the second job's start notifies her: the PUT made this process's notifier read again
        found: list[dict[str, Any]] = wait_for(
            lambda: len(items := notifications(client, token)) >= 3 and items, "three notifications"
        )
    assert sorted((item["job_id"], item["event_type"]) for item in found) == sorted(
        [(first, "job.completed"), (second, "job.started"), (second, "job.completed")]
    )


def test_no_channel_wanting_an_event_stores_no_notification(client: TestClient, token_for: TokenFor) -> None:
    alice, bob = token_for("alice", "acme"), token_for("bob", "acme")
    put_preferences(client, bob, websocket={"enabled": False})
    quiet = submit(client, bob)
    wait_for(lambda: client.get(f"/jobs/{quiet}", headers=auth(bob)).json()["state"] == "completed", "bob's job")
    # The in-process notifier takes events in order: once alice's later one is handled, bob's were too.
    loud = submit(client, alice)
    found = wait_for(
        lambda: [item for item in notifications(client, alice) if item["event_type"] == "job.completed"],
        "a notification",
    )
    assert [item["job_id"] for item in found] == [loud]
    assert notifications(client, bob) == []


def test_unread_filter_read_and_read_all(client: TestClient, token_for: TokenFor) -> None:
    token = token_for("alice", "acme")
    found = outcome_notifications(client, token)
    first = found[0]["id"]
    read = client.post(f"/notifications/{first}/read", headers=auth(token))
    assert read.status_code == 200 and read.json()["read"] is True and read.json()["read_at"] is not None
    again = client.post(f"/notifications/{first}/read", headers=auth(token)).json()
    assert again["read_at"] == read.json()["read_at"]  # reading twice keeps the first time
    unread = notifications(client, token, unread="true")
    assert [item["id"] for item in unread] == [item["id"] for item in found[1:]]
    page = client.get("/notifications", params={"unread": "true", "limit": 1}, headers=auth(token)).json()
    assert [item["id"] for item in page["items"]] == [found[1]["id"]] and page["next_cursor"] == found[1]["id"]
    assert page["unread_count"] == 2  # all unread ones, not the page's
    rest = notifications(client, token, unread="true", cursor=page["next_cursor"])
    assert [item["id"] for item in rest] == [found[2]["id"]]
    assert client.post("/notifications/read-all", headers=auth(token)).json() == {"marked": 2}
    assert client.get("/notifications", headers=auth(token)).json()["unread_count"] == 0
    assert notifications(client, token, unread="true") == []
    assert all(item["read"] for item in notifications(client, token))


def test_preferences_default_to_websocket_outcomes_and_keep_the_server_made_secret(
    client: TestClient, token_for: TokenFor
) -> None:
    token = token_for("alice", "acme")
    got = client.get("/notifications/preferences", headers=auth(token)).json()
    assert got["websocket"] == {"enabled": True, "events": DEFAULT_EVENTS}
    assert got["email"]["enabled"] is False and got["webhook"]["enabled"] is False
    secret = got["webhook_secret"]
    assert len(secret) == 64 and int(secret, 16) >= 0
    body = {
        "email": {"enabled": True, "address": "alice@example.com", "events": ["job.failed"]},
        "webhook": {"enabled": True, "url": "https://example.com/hook", "events": ["workflow.completed"]},
        "webhook_secret": "chosen-by-the-client",
    }
    put = put_preferences(client, token, **body)
    assert put["webhook_secret"] == secret
    assert put["email"] == body["email"] and put["webhook"] == body["webhook"]
    assert client.get("/notifications/preferences", headers=auth(token)).json() == put
    bob = client.get("/notifications/preferences", headers=auth(token_for("bob", "acme"))).json()
    assert bob["email"]["enabled"] is False and bob["webhook_secret"] != secret


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"websocket": {"events": ["job.exploded"]}}, "job.completed"),
        ({"email": {"enabled": True}}, "email needs an address"),
        ({"email": {"enabled": True, "address": "not-an-address"}}, "is not an email address"),
        ({"webhook": {"enabled": True, "url": "ftp://example.com/hook"}}, "http:// or https://"),
        ({"webhook": {"enabled": True, "url": "file:///etc/passwd"}}, "http:// or https://"),
        ({"webhook": {"enabled": True}}, "webhook needs a url"),
        ({"email": {"enabled": True, "adress": "alice@example.com"}}, "adress"),
        ({"emial": {"enabled": True, "address": "alice@example.com"}}, "emial"),
    ],
)
def test_invalid_preferences_are_refused_with_a_clear_422(
    client: TestClient, token_for: TokenFor, body: dict[str, Any], complaint: str
) -> None:
    response = client.put("/notifications/preferences", json=body, headers=auth(token_for()))
    assert response.status_code == 422
    assert complaint in response.text


def test_users_only_see_and_mark_their_own_notifications(client: TestClient, token_for: TokenFor) -> None:
    alice = token_for("alice", "acme")
    found = outcome_notifications(client, alice)
    strangers = (token_for("bob", "acme"), token_for("alice", "evil"), token_for("root", "acme", admin=True))
    for stranger in strangers:
        assert notifications(client, stranger) == []
        assert client.post(f"/notifications/{found[0]['id']}/read", headers=auth(stranger)).status_code == 404
        assert client.post("/notifications/read-all", headers=auth(stranger)).json() == {"marked": 0}
    assert len(notifications(client, alice, unread="true")) == 3
    assert client.post(f"/notifications/{'0' * 26}/read", headers=auth(alice)).status_code == 404
    assert client.get("/notifications", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_notification_created_reaches_the_owners_socket_only(client: TestClient, token_for: TokenFor) -> None:
    alice, bob = token_for("alice", "acme"), token_for("bob", "acme")
    put_preferences(client, alice, websocket={"enabled": True, "events": ["job.completed"]})
    with (
        client.websocket_connect(f"/ws?token={alice}") as alice_socket,
        client.websocket_connect(f"/ws?token={bob}") as bob_socket,
    ):
        for socket in (alice_socket, bob_socket):
            assert socket.receive_json()["type"] == "hello"
        job_id = submit(client, alice)
        while (event := alice_socket.receive_json())["type"] != "notification.created":
            pass
        assert event["data"]["job_id"] == job_id and event["data"]["event_type"] == "job.completed"
        assert event["user_id"] == "alice" and event["data"]["read"] is False
        stored = wait_for(lambda: notifications(client, alice), "the stored notification")
        assert stored[0]["id"] == event["data"]["id"]
        bob_socket.send_json({"op": "ping"})
        assert bob_socket.receive_json() == {"type": "pong"}


def test_a_webhook_is_signed_and_retried_after_a_500(
    client: TestClient, token_for: TokenFor, webhook_receiver: WebhookReceiver
) -> None:
    token = token_for("alice", "acme")
    webhook_receiver.statuses = [500]
    preferences = put_preferences(
        client, token, webhook={"enabled": True, "url": webhook_receiver.url, "events": ["job.completed"]}
    )
    job_id = submit(client, token)

    def delivered() -> Any:
        items = [item for item in notifications(client, token) if item["event_type"] == "job.completed"]
        return items and items[0]["deliveries"]["webhook"]["state"] == "delivered" and items[0]

    notification = wait_for(delivered, "the webhook delivered")
    attempts = notification["deliveries"]["webhook"]["attempts"]
    assert [(attempt["ok"], attempt["status"]) for attempt in attempts] == [(False, 500), (True, 200)]
    assert notification["channels"] == ["websocket", "webhook"]
    assert len(webhook_receiver.calls) == 2
    for call in webhook_receiver.calls:
        assert verify_signature(preferences["webhook_secret"], call.headers[SIGNATURE_HEADER], call.body)
        assert not verify_signature("another-secret", call.headers[SIGNATURE_HEADER], call.body)
        assert call.headers[EVENT_HEADER] == "job.completed"
        assert call.headers[DELIVERY_HEADER] == notification["id"]
        sent = json.loads(call.body)
        assert sent["id"] == notification["id"] and sent["job_id"] == job_id and "deliveries" not in sent


def test_a_webhook_answering_404_fails_at_once_and_email_without_smtp_fails_too(
    client: TestClient, token_for: TokenFor, webhook_receiver: WebhookReceiver
) -> None:
    token = token_for("alice", "acme")
    webhook_receiver.statuses = [404, 404, 404]
    put_preferences(
        client,
        token,
        websocket={"enabled": False},
        webhook={"enabled": True, "url": webhook_receiver.url, "events": ["job.completed"]},
        email={"enabled": True, "address": "alice@example.com", "events": ["job.completed"]},
    )
    submit(client, token)

    def settled() -> Any:
        items = notifications(client, token)
        states = items and {channel: d["state"] for channel, d in items[0]["deliveries"].items()}
        return states == {"webhook": "failed", "email": "failed"} and items[0]

    notification = wait_for(settled, "both deliveries failed")
    assert notification["channels"] == ["email", "webhook"]
    webhook, email = notification["deliveries"]["webhook"], notification["deliveries"]["email"]
    assert [(attempt["ok"], attempt["status"]) for attempt in webhook["attempts"]] == [(False, 404)]
    assert len(email["attempts"]) == 1 and "SMTP is not configured" in email["attempts"][0]["error"]
    assert len(webhook_receiver.calls) == 1
