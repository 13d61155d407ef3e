"""The WebSocket protocol in process: topics, access to them, frames we refuse, and resuming from the store."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse, WebSocketTestSession

from tests.unit.api.test_jobs import TokenFor, auth, wait_for_state

DEMO = {"task": "general.demo", "payload": {"duration_s": 0.05, "steps": 3}}


def submit(client: TestClient, token: str, body: dict[str, Any] = DEMO) -> str:
    response = client.post("/jobs", json=body, headers=auth(token))
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def reply(socket: WebSocketTestSession, frame: dict[str, Any]) -> dict[str, Any]:
    socket.send_json(frame)
    answer: dict[str, Any] = socket.receive_json()
    return answer


def events_until_completed(socket: WebSocketTestSession, job_id: str, count: int = 1000) -> list[dict[str, Any]]:
    """The job's events until its completion (or ``count`` of them); other frames are skipped."""
    events: list[dict[str, Any]] = []
    while len(events) < count and not (events and events[-1]["type"] == "job.completed"):
        frame = socket.receive_json()
        if frame.get("job_id") == job_id:  # notifications of the job carry its id in their data only
            events.append(frame)
    return events


def frames_until(socket: WebSocketTestSession, frame_type: str) -> list[dict[str, Any]]:
    """Every frame up to and including the first of ``frame_type``."""
    frames = [socket.receive_json()]
    while frames[-1]["type"] != frame_type:
        frames.append(socket.receive_json())
    return frames


def test_hello_names_the_default_topics_and_a_resume_position(client: TestClient, token_for: TokenFor) -> None:
    with client.websocket_connect(f"/ws?token={token_for('alice', 'acme')}") as socket:
        hello = socket.receive_json()
        assert hello["topics"] == ["mine"] and len(hello["last_event_id"]) == 26
    with client.websocket_connect(f"/ws?token={token_for('root', 'acme', admin=True)}") as socket:
        assert socket.receive_json()["topics"] == ["mine", "queue:*"]


def test_malformed_frames_each_get_an_error_and_the_socket_stays_open(client: TestClient, token_for: TokenFor) -> None:
    bad_frames: list[Any] = [
        [1, 2],
        {"no": "op"},
        {"op": 7},
        {"op": "subscribe"},
        {"op": "subscribe", "topics": "job:x"},
        {"op": "subscribe", "topics": []},
        {"op": "subscribe", "topics": ["jobs:x"]},
        {"op": "subscribe", "topics": [None]},
        {"op": "subscribe", "topics": ["queue:no_such_engine"]},
        {"op": "resume"},
        {"op": "resume", "after": "not-an-id"},
    ]
    with client.websocket_connect(f"/ws?token={token_for()}") as socket:
        socket.receive_json()
        for frame in bad_frames:
            answer = reply(socket, frame)
            assert answer["type"] == "error" and answer["detail"], frame
        socket.send_text("{" * 100)
        assert socket.receive_json()["detail"] == "frames must be JSON"
        socket.send_text(" " * 70_000)
        assert "at most" in socket.receive_json()["detail"]
        assert reply(socket, {"op": "ping"}) == {"type": "pong"}


def test_another_users_job_cannot_be_subscribed_and_leaks_nothing(client: TestClient, token_for: TokenFor) -> None:
    alice, bob = token_for("alice", "acme"), token_for("bob", "acme")
    stranger_admin = token_for("x", "evil", admin=True)
    job_id = submit(client, alice, {"task": "general.demo", "payload": {"duration_s": 0.5, "steps": 5}})
    for token in (bob, stranger_admin):
        with client.websocket_connect(f"/ws?token={token}") as socket:
            socket.receive_json()
            refused = reply(socket, {"op": "subscribe", "topics": [f"job:{job_id}"]})
            assert refused == {"type": "error", "op": "subscribe", "detail": f"job {job_id} not found"}
            absent = reply(socket, {"op": "subscribe", "topics": ["job:" + "0" * 26]})
            assert absent["detail"] == f"job {'0' * 26} not found"  # absent and not-yours read the same
            wait_for_state(client, job_id, alice, {"completed"})
            assert reply(socket, {"op": "ping"}) == {"type": "pong"}  # no event of alice's job was queued
    with client.websocket_connect(f"/ws?token={bob}") as socket:
        socket.receive_json()
        refused = reply(socket, {"op": "subscribe", "topics": ["queue:general"]})
        assert refused["detail"] == "queue topics are for admins"


def test_an_admin_may_watch_a_job_of_their_tenant(client: TestClient, token_for: TokenFor) -> None:
    alice, admin = token_for("alice", "acme"), token_for("root", "acme", admin=True)
    with client.websocket_connect(f"/ws?token={admin}") as socket:
        socket.receive_json()
        job_id = submit(client, alice, {"task": "general.demo", "payload": {"duration_s": 0.3, "steps": 3}})
        answer = reply(socket, {"op": "subscribe", "topics": [f"job:{job_id}"]})
        assert answer == {"type": "subscribed", "topics": [f"job:{job_id}", "mine", "queue:*"]}
        events = events_until_completed(socket, job_id)
    assert {event["job_id"] for event in events} == {job_id}
    assert len({event["id"] for event in events}) == len(events)


def test_unsubscribing_mine_narrows_a_socket_to_the_topics_it_names(client: TestClient, token_for: TokenFor) -> None:
    token = token_for("carol", "acme")
    with client.websocket_connect(f"/ws?token={token}") as socket:
        socket.receive_json()
        assert reply(socket, {"op": "unsubscribe", "topics": ["mine"]}) == {"type": "unsubscribed", "topics": []}
        ignored = submit(client, token)
        watched = submit(client, token)
        assert reply(socket, {"op": "subscribe", "topics": [f"job:{watched}"]})["type"] == "subscribed"
        events = events_until_completed(socket, watched)
        wait_for_state(client, ignored, token, {"completed"})
        assert reply(socket, {"op": "ping"}) == {"type": "pong"}
    assert {event["job_id"] for event in events} == {watched}


def test_resume_replays_what_a_socket_missed_once_and_in_order(client: TestClient, token_for: TokenFor) -> None:
    token = token_for("dave", "acme")
    with client.websocket_connect(f"/ws?token={token}") as socket:
        socket.receive_json()
        job_id = submit(client, token)
        seen = events_until_completed(socket, job_id)
    assert [event["type"] for event in seen][:2] == ["job.queued", "job.started"] and len(seen) == 6
    with client.websocket_connect(f"/ws?token={token}") as socket:
        socket.receive_json()
        socket.send_json({"op": "resume", "after": seen[1]["id"]})
        *replayed, resumed = frames_until(socket, "resumed")
        socket.send_json({"op": "ping"})
        assert frames_until(socket, "pong")[-1] == {"type": "pong"}  # live notifications may come first
    assert [event for event in replayed if event.get("job_id") == job_id] == seen[2:]
    # "replayed" counts the stored events; a notification published while the store was read is held and sent
    # before "resumed" too, but live (test_resume.py drives that race by hand).
    assert resumed | {"replayed": 0} == {"type": "resumed", "after": seen[1]["id"], "replayed": 0, "truncated": False}
    assert len(seen[2:]) <= resumed["replayed"] <= len(replayed)


def test_resume_while_a_job_runs_gives_every_event_once(client: TestClient, token_for: TokenFor) -> None:
    token = token_for("erin", "acme")
    with client.websocket_connect(f"/ws?token={token}") as observer:
        observer.receive_json()
        with client.websocket_connect(f"/ws?token={token}") as first:
            first.receive_json()
            job_id = submit(client, token, {"task": "general.demo", "payload": {"duration_s": 1.0, "steps": 40}})
            before = events_until_completed(first, job_id, count=5)
        with client.websocket_connect(f"/ws?token={token}") as second:  # a reconnect, while the job goes on
            second.receive_json()
            second.send_json({"op": "resume", "after": before[-1]["id"]})
            after = events_until_completed(second, job_id)
        everything = events_until_completed(observer, job_id)
    got = [event["id"] for event in before + after]
    assert got == [event["id"] for event in everything]


def test_a_resume_point_in_the_url_replays_before_anything_live(client: TestClient, token_for: TokenFor) -> None:
    token = token_for("frank", "acme")
    with client.websocket_connect(f"/ws?token={token}") as socket:
        start = socket.receive_json()["last_event_id"]
        job_id = submit(client, token)
        seen = events_until_completed(socket, job_id)
    with client.websocket_connect(f"/ws?token={token}&after={start}") as socket:
        assert socket.receive_json()["type"] == "hello"
        *replayed, _ = frames_until(socket, "resumed")
        assert [event for event in replayed if event.get("job_id") == job_id] == seen
    with pytest.raises(WebSocketDenialResponse) as refused, client.websocket_connect(f"/ws?token={token}&after=x"):
        pass
    assert refused.value.status_code == 400


def test_topics_in_the_url_replace_the_defaults_and_are_checked_like_frames(
    client: TestClient, token_for: TokenFor
) -> None:
    alice, bob = token_for("gina", "acme"), token_for("hank", "acme")
    job_id = submit(client, alice)
    with client.websocket_connect(f"/ws?token={alice}&topics=job:{job_id},notifications") as socket:
        assert socket.receive_json()["topics"] == [f"job:{job_id}", "notifications"]
    refusals = {
        f"/ws?token={bob}&topics=job:{job_id}": 404,  # not bob's
        f"/ws?token={bob}&topics=queue:general": 403,
        f"/ws?token={bob}&topics=jobs:x": 400,
    }
    for path, status_code in refusals.items():
        with pytest.raises(WebSocketDenialResponse) as refused, client.websocket_connect(path):
            pass
        assert refused.value.status_code == status_code, path


def test_an_admin_on_the_tenant_topic_hears_every_users_jobs_but_not_their_notifications(
    client: TestClient, token_for: TokenFor
) -> None:
    alice, admin = token_for("ivy", "acme"), token_for("root", "acme", admin=True)
    with client.websocket_connect(f"/ws?token={admin}&topics=tenant") as socket:
        assert socket.receive_json()["topics"] == ["tenant"]
        job_id = submit(client, alice)
        events = events_until_completed(socket, job_id)
        wait_for_state(client, submit(client, token_for("x", "other")), token_for("x", "other"), {"completed"})
        assert reply(socket, {"op": "ping"}) == {"type": "pong"}  # no notification of ivy's, nothing of "other"
    assert [event["type"] for event in events][0] == "job.queued" and events[-1]["type"] == "job.completed"
    with client.websocket_connect(f"/ws?token={alice}") as socket:
        socket.receive_json()
        assert reply(socket, {"op": "subscribe", "topics": ["tenant"]})["detail"] == "tenant topics are for admins"
