"""The WebSocket protocol over real processes: resume without gap or repeat across gateways and restarts,
slow clients cut off alone, and topics nobody else's events leak through."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket as socket_module
import struct
from typing import Any, BinaryIO

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from engineroom.notifications.websocket import CLOSE_TOO_SLOW
from tests.e2e.test_walking_skeleton import EVENT_TIMEOUT_S, TokenFor, auth, connect, submit, ws_url

#: A demo job of this many steps publishes steps + 3 events (queued, started, progress per step, completed).
BURST_STEPS = 200


async def frame(socket: ClientConnection) -> dict[str, Any]:
    received: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), EVENT_TIMEOUT_S))
    return received


async def job_events(socket: ClientConnection, job_id: str, *, count: int | None = None) -> list[dict[str, Any]]:
    """The job's events, up to ``count`` of them or up to its completion; other frames are skipped."""
    events: list[dict[str, Any]] = []
    while count is None or len(events) < count:
        received = await frame(socket)
        if received.get("job_id") == job_id:
            events.append(received)
            if received["type"] == "job.completed":
                break
    return events


async def resume(base_url: str, token: str, after: str) -> ClientConnection:
    """Reconnect the way clients should: the resume point in the URL, so the replay precedes live events."""
    socket = await websockets.connect(ws_url(base_url, token) + f"&after={after}")
    assert (await frame(socket))["type"] == "hello"
    return socket


def open_frozen_websocket(port: int, path: str) -> socket_module.socket:
    """A WebSocket handshake over a socket with a tiny receive buffer that then reads nothing, like a frozen tab.
    (Client libraries keep reading into their own buffers; this one cannot.)"""
    sock = socket_module.socket()
    sock.setsockopt(socket_module.SOL_SOCKET, socket_module.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    response = b""
    while not response.endswith(b"\r\n\r\n"):  # byte by byte: read nothing past the handshake
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def read_close_code(sock: socket_module.socket) -> int | None:
    """Read (unmasked, server) frames until a close frame and return its code; ``None`` if the stream ends."""
    sock.settimeout(EVENT_TIMEOUT_S)
    with sock, sock.makefile("rb") as stream:
        return _close_code(stream)


def _close_code(stream: BinaryIO) -> int | None:
    while True:
        head = stream.read(2)
        if len(head) < 2:
            return None
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", stream.read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", stream.read(8))[0]
        payload = stream.read(length)
        if opcode == 0x8:
            code: int = struct.unpack("!H", payload[:2])[0]
            return code


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [event["id"] for event in events]


async def test_a_client_that_drops_mid_burst_resumes_on_another_gateway_and_misses_nothing(
    stack: Any, token_for: TokenFor
) -> None:
    gateway_a, gateway_b = stack.start_api("api-a"), stack.start_api("api-b")
    stack.start_worker()
    token = token_for("alice", "acme")
    observer = await connect(gateway_b, token)
    client = await connect(gateway_a, token)
    async with httpx.AsyncClient(base_url=gateway_a) as http:
        job_id = await submit(http, token, "general.demo", {"duration_s": 2.0, "steps": BURST_STEPS})
    before = await job_events(client, job_id, count=40)
    await client.close()  # the laptop sleeps while the burst goes on
    await asyncio.sleep(0.3)
    client = await resume(gateway_b, token, before[-1]["id"])
    after = await job_events(client, job_id)
    everything = await job_events(observer, job_id)
    await asyncio.gather(client.close(), observer.close())
    assert len(everything) == BURST_STEPS + 3
    assert ids(before + after) == ids(everything) == sorted(ids(everything))


async def test_a_gateway_restart_loses_no_event_for_a_client_that_resumes(stack: Any, token_for: TokenFor) -> None:
    gateway = stack.start_api("api-1")
    stack.start_worker()
    token = token_for("bob", "acme")
    client = await connect(gateway, token)
    async with httpx.AsyncClient(base_url=gateway) as http:
        job_id = await submit(http, token, "general.demo", {"duration_s": 3.0, "steps": 60})
    before = await job_events(client, job_id, count=5)
    stack.processes[0].stop()  # the only gateway goes away mid-job
    restarted = stack.start_api("api-2")
    client = await resume(restarted, token, before[-1]["id"])
    after = await job_events(client, job_id)
    await client.close()
    assert [event["type"] for event in before + after].count("job.progress") == 60
    assert ids(before + after) == sorted(set(ids(before + after)))
    assert (before + after)[-1]["type"] == "job.completed"


async def test_a_client_that_stops_reading_is_disconnected_without_slowing_others(
    stack: Any, token_for: TokenFor
) -> None:
    gateway = stack.start_api(env={"ENGINEROOM_WS_SEND_BUFFER": "20"})
    stack.start_worker()
    token = token_for("carol", "acme")
    port = int(gateway.rsplit(":", 1)[1])
    slow = await asyncio.to_thread(open_frozen_websocket, port, f"/ws?token={token}")
    # A fast reader: its library takes every frame off the wire as it comes, however many wait to be read
    fast = await websockets.connect(ws_url(gateway, token), max_queue=None)
    assert json.loads(await asyncio.wait_for(fast.recv(), EVENT_TIMEOUT_S))["type"] == "hello"
    # ~8 MB of events: more than the kernel buffers between the two (up to 4 MiB sending) and the 20 frames
    big = "x" * 400_000
    async with httpx.AsyncClient(base_url=gateway) as http:
        job_ids = {await submit(http, token, "general.demo", {"duration_s": 0, "result": big}) for _ in range(20)}
        completed: set[str] = set()
        while completed != job_ids:
            received = await frame(fast)
            if received.get("type") == "job.completed":
                completed.add(received["job_id"])
    assert await asyncio.to_thread(read_close_code, slow) == CLOSE_TOO_SLOW
    await fast.close()


async def test_frames_and_subscriptions_are_checked_over_a_real_gateway(stack: Any, token_for: TokenFor) -> None:
    gateway = stack.start_api()
    stack.start_worker()
    alice, mallory = token_for("alice", "acme"), token_for("mallory", "acme")
    async with httpx.AsyncClient(base_url=gateway) as http:
        job_id = await submit(http, alice, "general.demo", {"duration_s": 0.5, "steps": 5})
        intruder = await connect(gateway, mallory)
        refused = ("nonsense", {"op": "fly"}, {"op": "subscribe", "topics": [f"job:{job_id}"]})
        for text in (item if isinstance(item, str) else json.dumps(item) for item in refused):
            await intruder.send(text)
            assert (await frame(intruder))["type"] == "error"
        while (await http.get(f"/jobs/{job_id}", headers=auth(alice))).json()["state"] != "completed":
            await asyncio.sleep(0.05)
        await intruder.send(json.dumps({"op": "ping"}))
        assert await frame(intruder) == {"type": "pong"}  # nothing of alice's job reached mallory
        await intruder.close()
