"""A socket's sender ends quietly when the socket has closed under it, and says so, with the traceback, when
anything else fails: a background task's failure would otherwise go unseen."""

from __future__ import annotations

import asyncio
import logging

import pytest
from starlette.websockets import WebSocketDisconnected

from engineroom.models.event import EventType, new_event
from engineroom.models.principal import Principal
from engineroom.notifications.topics import Topic
from engineroom.notifications.websocket import Hub

ALICE = Principal(user_id="alice", tenant_id="acme")


class FailingSocket:
    """Stands in for a Starlette WebSocket whose every send fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.sends = 0

    async def send_text(self, text: str) -> None:
        self.sends += 1
        raise self.error

    async def close(self, code: int, reason: str = "") -> None:
        raise self.error


async def _send_one_event(socket: FailingSocket) -> None:
    hub = Hub(asyncio.get_running_loop(), buffer_frames=10)
    connection = hub.add(socket, ALICE, [Topic.parse("mine")])  # type: ignore[arg-type]
    hub.deliver(new_event(EventType.JOB_PROGRESS, tenant_id="acme", user_id="alice", job_id="J", data={}))
    for _ in range(20):
        await asyncio.sleep(0)
    assert socket.sends == 1
    await hub.remove(connection)


@pytest.mark.parametrize(
    "error",
    [
        WebSocketDisconnected('Cannot call "send" once a close message has been sent.'),  # after our own close
        RuntimeError(  # uvicorn's, after the client went away
            "Unexpected ASGI message 'websocket.send', after sending 'websocket.close' or response already completed."
        ),
    ],
)
async def test_a_socket_closed_under_its_sender_ends_it_quietly(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="engineroom.notifications.websocket"):
        await _send_one_event(FailingSocket(error))
    assert [record for record in caplog.records if record.name == "engineroom.notifications.websocket"] == []


async def test_any_other_failure_of_a_send_is_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="engineroom.notifications.websocket"):
        await _send_one_event(FailingSocket(RuntimeError("the event loop is closed")))
    (record,) = [record for record in caplog.records if record.name == "engineroom.notifications.websocket"]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert "alice" in record.getMessage()
