"""One client process of the WebSocket fan-out benchmark: many sockets on one event loop.

``python -m bench._ws_clients PLAN.json``. The plan lists one ``{"url", "user"}`` per socket and the size of the
connection waves. The process raises its open-file limit to the hard limit (a socket is a file), opens the
sockets wave after wave (each answers ``hello``, then a ``ping`` with ``pong``, after which the server has
registered it; a wave's sockets open at most ``CONNECT_CONCURRENCY`` at once), then prints one JSON line: how
long opening took, how many sockets failed to open and the handshake times. It then reads one JSON line from
stdin, ``{"per_user": {user: events}, "deadline": time.time()}``, works out how many events its open sockets are
due, collects until it has them or the deadline passes, and prints one JSON line: how many arrived, their
latencies (receipt time minus the event's ``ts``), sockets closed early, and its own CPU time.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

#: Sockets opening at once: enough to connect 500 in a second or two without a SYN storm.
CONNECT_CONCURRENCY = 50
#: Seconds one socket may take to open and answer its ``ping``.
OPEN_TIMEOUT_S = 30.0


class Collector:
    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.first_at = 0.0
        self.last_at = 0.0
        self.closed_early: list[str] = []
        self.enough = asyncio.Event()
        self.expected: int | None = None

    def arrived(self, text: str | bytes) -> None:
        now = time.time()
        frame = json.loads(text)
        if "ts" not in frame:
            return
        self.latencies_ms.append((now - datetime.fromisoformat(frame["ts"]).timestamp()) * 1000)
        self.first_at = self.first_at or now
        self.last_at = now
        if self.expected is not None and len(self.latencies_ms) >= self.expected:
            self.enough.set()


def raise_open_files_limit() -> int:
    """Lift the soft ``RLIMIT_NOFILE`` to the hard one (thousands of sockets need it); returns the new limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def _open(url: str, compression: bool, gate: asyncio.Semaphore) -> tuple[ClientConnection, float]:
    """One socket, registered by the server; returns it and its handshake time in ms (hello and pong included)."""
    async with gate:
        start = time.perf_counter()
        socket = await connect(
            url,
            max_size=None,
            ping_interval=None,
            compression="deflate" if compression else None,
            open_timeout=OPEN_TIMEOUT_S,
        )
        for expected, frame in (("hello", None), ("pong", '{"op": "ping"}')):
            if frame is not None:
                await socket.send(frame)
            answer = json.loads(await asyncio.wait_for(socket.recv(), OPEN_TIMEOUT_S))
            if answer.get("type") != expected:
                raise RuntimeError(f"expected {expected}, got {answer!r}")
        return socket, (time.perf_counter() - start) * 1000


async def _open_all(
    plan: dict[str, Any],
) -> tuple[list[tuple[ClientConnection, str]], list[float], list[str], float]:
    """Open the plan's sockets in waves of ``plan["wave"]``; returns (socket, user) pairs, handshake times, the
    errors of those that failed, and the seconds it took."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    sockets: list[tuple[ClientConnection, str]] = []
    handshakes_ms: list[float] = []
    errors: list[str] = []
    targets: list[dict[str, str]] = plan["sockets"]
    start = time.perf_counter()
    for first in range(0, len(targets), plan["wave"]):
        wave = targets[first : first + plan["wave"]]
        opened = await asyncio.gather(
            *(_open(target["url"], plan["compression"], gate) for target in wave), return_exceptions=True
        )
        for target, outcome in zip(wave, opened, strict=True):
            if isinstance(outcome, BaseException):
                errors.append(repr(outcome)[:200])
            else:
                sockets.append((outcome[0], target["user"]))
                handshakes_ms.append(outcome[1])
    return sockets, handshakes_ms, errors, time.perf_counter() - start


async def _listen(socket: ClientConnection, collector: Collector) -> None:
    try:
        async for text in socket:
            collector.arrived(text)
    except ConnectionClosed as exc:
        collector.closed_early.append(repr(exc))


async def _run(plan: dict[str, Any]) -> None:
    open_files = raise_open_files_limit()
    sockets, handshakes_ms, errors, open_s = await _open_all(plan)
    collector = Collector()
    listeners = [asyncio.create_task(_listen(socket, collector)) for socket, _ in sockets]
    opened = {
        "open_s": round(open_s, 3),
        "opened": len(sockets),
        "failed": len(errors),
        "errors": errors[:5],
        "handshake_ms": sorted(round(ms, 2) for ms in handshakes_ms),
        "open_files_limit": open_files,
    }
    print(json.dumps(opened), flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    order = json.loads(line)
    per_user: dict[str, int] = order["per_user"]
    collector.expected = sum(per_user.get(user, 0) for _, user in sockets)
    if len(collector.latencies_ms) >= collector.expected:
        collector.enough.set()
    try:
        await asyncio.wait_for(collector.enough.wait(), max(0.0, float(order["deadline"]) - time.time()))
    except TimeoutError:
        pass  # reported as fewer received than expected
    for listener in listeners:
        listener.cancel()
    await asyncio.gather(*(socket.close() for socket, _ in sockets), return_exceptions=True)
    report = {
        "sockets": len(sockets),
        "expected": collector.expected,
        "received": len(collector.latencies_ms),
        "latencies_ms": [round(latency, 3) for latency in collector.latencies_ms],
        "first_at": collector.first_at,
        "last_at": collector.last_at,
        "closed_early": collector.closed_early[:5],
        "closed_early_count": len(collector.closed_early),
        "cpu_s": time.process_time(),
    }
    print(json.dumps(report), flush=True)


def main() -> None:
    asyncio.run(_run(json.loads(Path(sys.argv[1]).read_text())))


if __name__ == "__main__":
    main()
