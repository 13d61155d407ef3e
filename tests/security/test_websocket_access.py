"""Every WebSocket topic kind, tried by someone who may not hear it: a subscribe frame gets an error frame, the same
topic in ``?topics=`` is refused at the handshake, and topics that are always the caller's own (``mine``,
``notifications``, an admin's ``tenant``) carry none of the victim's events."""

from __future__ import annotations

import json
from typing import Any, get_args

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse, WebSocketTestSession

from engineroom.notifications.topics import TopicKind
from tests.conftest import make_token
from tests.security.conftest import Victim, bearer, wait_for

#: Topic kinds that name someone else's things, as an intruder would ask for them, and the handshake status.
REFUSED = {
    "job": ("job:{job_id}", 404),
    "workflow": ("workflow:{workflow_id}", 404),
    "queue": ("queue:{engine}", 403),
    "tenant": ("tenant", 403),  # for a non-admin; an admin's tenant topic is their own tenant (below)
}
#: Topic kinds that always mean the caller's own events, whoever asks.
OWN = {"mine", "notifications", "tenant"}


def test_every_topic_kind_is_tried_here() -> None:
    assert set(get_args(TopicKind)) == set(REFUSED) | OWN


def frames_until_pong(socket: WebSocketTestSession) -> list[dict[str, Any]]:
    """Everything the socket was sent before it answers a ping now."""
    socket.send_json({"op": "ping"})
    frames = []
    while (frame := socket.receive_json())["type"] != "pong":
        frames.append(frame)
    return frames


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_a_non_owner_non_admin_is_refused_each_topic_kind(gateway: TestClient, victim: Victim, kind: str) -> None:
    topic, handshake_status = REFUSED[kind]
    topic = topic.format(**victim.ids)
    bob = make_token("bob", "acme")
    with gateway.websocket_connect(f"/ws?token={bob}") as socket:
        assert socket.receive_json()["type"] == "hello"
        socket.send_json({"op": "subscribe", "topics": [topic]})
        answer = socket.receive_json()
        assert answer["type"] == "error" and answer["op"] == "subscribe", answer
        # and nothing the socket hears before a pong mentions the topic or anything of the victim's
        heard = [json.dumps(frame) for frame in frames_until_pong(socket)]
        assert [frame for frame in heard if any(word in frame for word in (topic, *victim.secrets))] == []
    with (
        pytest.raises(WebSocketDenialResponse) as refused,
        gateway.websocket_connect(f"/ws?token={bob}&topics={topic}"),
    ):
        pass
    assert refused.value.status_code == handshake_status


def test_another_tenants_admin_cannot_watch_the_victims_job_or_workflow(gateway: TestClient, victim: Victim) -> None:
    eve = make_token("eve", "globex", admin=True)
    for topic in (f"job:{victim.ids['job_id']}", f"workflow:{victim.ids['workflow_id']}"):
        with (
            pytest.raises(WebSocketDenialResponse) as refused,
            gateway.websocket_connect(f"/ws?token={eve}&topics={topic}"),
        ):
            pass
        assert refused.value.status_code == 404


def test_own_topics_of_intruders_carry_none_of_the_victims_events(gateway: TestClient, victim: Victim) -> None:
    intruders = {
        "bob@acme": (make_token("bob", "acme"), "mine,notifications"),
        "eve@globex (admin)": (make_token("eve", "globex", admin=True), "mine,notifications,tenant,queue:*"),
    }
    headers = bearer(victim.token)
    with gateway.websocket_connect(f"/ws?token={victim.token}&topics=mine,notifications") as own:
        sockets = {}
        for who, (token, topics) in intruders.items():
            sockets[who] = gateway.websocket_connect(f"/ws?token={token}&topics={topics}").__enter__()
            assert sockets[who].receive_json()["type"] == "hello"
        try:
            assert own.receive_json()["type"] == "hello"
            job = gateway.post("/jobs", json={"task": "general.demo", "payload": {"duration_s": 0}}, headers=headers)
            job_id = job.json()["id"]
            heard: list[dict[str, Any]] = []

            def notified() -> bool:
                heard.extend(frames_until_pong(own))
                return any(f["type"] == "notification.created" and f["data"].get("job_id") == job_id for f in heard)

            wait_for(notified, "the victim's own notification")
            for who, socket in sockets.items():
                frames = frames_until_pong(socket)
                leaked = [frame for frame in frames if job_id in str(frame) or "alice" in str(frame)]
                assert not leaked, f"{who} heard {leaked}"
        finally:
            for socket in sockets.values():
                socket.__exit__(None, None, None)
