"""Resuming one socket while events keep arriving: the races, driven by hand so each one surely happens."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from engineroom.models.event import Event, EventType, new_event
from engineroom.models.principal import Principal
from engineroom.notifications.topics import Topic
from engineroom.notifications.websocket import CLOSE_TOO_SLOW, ClientConnection, Hub

ALICE = Principal(user_id="alice", tenant_id="acme")


class RecordingSocket:
    """Stands in for a Starlette WebSocket: keeps what was sent; ``stalled`` sockets never finish a send."""

    def __init__(self, *, stalled: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed_with: int | None = None
        self.stalled = stalled

    async def send_text(self, text: str) -> None:
        if self.stalled:
            await asyncio.Event().wait()
        self.sent.append(json.loads(text))

    async def close(self, code: int, reason: str = "") -> None:
        self.closed_with = code


def alice_event(job_id: str = "J") -> Event:
    return new_event(EventType.JOB_PROGRESS, tenant_id="acme", user_id="alice", job_id=job_id, data={})


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_events_published_during_a_replay_are_held_then_sent_once_in_order() -> None:
    hub = Hub(asyncio.get_running_loop(), buffer_frames=100)
    socket = RecordingSocket()
    connection = hub.add(socket, ALICE, [Topic.parse("mine")])  # type: ignore[arg-type]
    stored = [alice_event() for _ in range(5)]
    late = [alice_event() for _ in range(3)]

    async def replay(keys: list[str], after: str) -> tuple[list[Event], bool]:
        assert keys == ["user:acme:alice"] and after == stored[0].id
        # While the store is read: the two newest stored events are published only now, and new ones arrive.
        for event in (stored[3], late[0], stored[4], late[1]):
            hub.deliver(event)
        return stored[1:], False

    await connection.resume(stored[0].id, replay)
    hub.deliver(late[1])  # a repeat from the bus, after the replay
    hub.deliver(late[2])
    await settle()
    assert [frame.get("id") for frame in socket.sent] == [
        *(event.id for event in stored[1:]),
        late[0].id,
        late[1].id,
        None,  # "resumed"
        late[2].id,
    ]
    assert socket.sent[-2] == {"type": "resumed", "after": stored[0].id, "replayed": 4, "truncated": False}
    await hub.remove(connection)


async def test_a_replay_skips_what_the_socket_already_sent_live_and_events_of_others() -> None:
    hub = Hub(asyncio.get_running_loop(), buffer_frames=100)
    socket = RecordingSocket()
    connection = hub.add(socket, ALICE, [Topic.parse("job:J1")])  # type: ignore[arg-type]
    sent_live, missed, other_job = alice_event("J1"), alice_event("J1"), alice_event("J2")
    hub.deliver(sent_live)
    await settle()

    async def replay(keys: list[str], after: str) -> tuple[list[Event], bool]:
        assert keys == ["job:J1"]
        return [sent_live, other_job, missed], True

    await connection.resume("0" * 26, replay)
    await settle()
    assert [frame.get("id") for frame in socket.sent] == [sent_live.id, missed.id, None]
    assert socket.sent[-1]["truncated"] is True
    await hub.remove(connection)


async def test_a_socket_that_stops_reading_is_closed_and_others_still_get_everything() -> None:
    hub = Hub(asyncio.get_running_loop(), buffer_frames=10)
    slow, fast = RecordingSocket(stalled=True), RecordingSocket()
    slow_connection = hub.add(slow, ALICE, [Topic.parse("mine")])  # type: ignore[arg-type]
    fast_connection = hub.add(fast, ALICE, [Topic.parse("mine")])  # type: ignore[arg-type]
    events = [alice_event() for _ in range(50)]
    for event in events:
        hub.deliver(event)
        await asyncio.sleep(0)
    await settle()
    assert slow.closed_with == CLOSE_TOO_SLOW
    assert [frame["id"] for frame in fast.sent] == [event.id for event in events]
    await hub.remove(slow_connection)
    await hub.remove(fast_connection)


async def test_unsubscribing_one_of_two_topics_on_the_same_key_keeps_the_other() -> None:
    hub = Hub(asyncio.get_running_loop(), buffer_frames=10)
    socket = RecordingSocket()
    connection: ClientConnection = hub.add(socket, ALICE, [Topic.parse("mine"), Topic.parse("notifications")])  # type: ignore[arg-type]
    hub.unsubscribe(connection, [Topic.parse("mine")])
    progress = alice_event()
    notice = new_event(EventType.NOTIFICATION_CREATED, tenant_id="acme", user_id="alice", data={})
    hub.deliver(progress)
    hub.deliver(notice)
    await settle()
    assert [frame["id"] for frame in socket.sent] == [notice.id]
    await hub.remove(connection)
