"""One client process of the WebSocket fan-out benchmark: many sockets on one event loop.

``python -m bench._ws_clients PLAN.json``. The plan lists one URL per socket. The process opens them all (each
answers ``hello``, then a ``ping`` with ``pong``, after which the server has registered it), prints ``ready``, then
reads ``expect N DEADLINE`` from stdin (N events in all for its sockets; DEADLINE a ``time.time()``), collects
until it has them or the deadline passes, and prints one JSON line: how many arrived, their latencies (receipt
time minus the event's ``ts``), sockets closed early, and its own CPU time.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

#: Sockets opening at once: enough to connect 500 in a second or two without a SYN storm.
CONNECT_CONCURRENCY = 50


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


async def _open(url: str, compression: bool, gate: asyncio.Semaphore) -> ClientConnection:
    async with gate:
        socket = await connect(url, max_size=None, ping_interval=None, compression="deflate" if compression else None)
        for expected, frame in (("hello", None), ("pong", '{"op": "ping"}')):
            if frame is not None:
                await socket.send(frame)
            answer = json.loads(await socket.recv())
            if answer.get("type") != expected:
                raise RuntimeError(f"expected {expected}, got {answer!r}")
        return socket


async def _listen(socket: ClientConnection, collector: Collector) -> None:
    try:
        async for text in socket:
            collector.arrived(text)
    except ConnectionClosed as exc:
        collector.closed_early.append(repr(exc))


async def _run(plan: dict[str, Any]) -> dict[str, Any]:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    sockets = await asyncio.gather(*(_open(url, plan["compression"], gate) for url in plan["urls"]))
    collector = Collector()
    listeners = [asyncio.create_task(_listen(socket, collector)) for socket in sockets]
    print("ready", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    _, expected, deadline = line.split()
    collector.expected = int(expected)
    if len(collector.latencies_ms) >= collector.expected:
        collector.enough.set()
    try:
        await asyncio.wait_for(collector.enough.wait(), max(0.0, float(deadline) - time.time()))
    except TimeoutError:
        pass  # reported as fewer received than expected
    for listener in listeners:
        listener.cancel()
    await asyncio.gather(*(socket.close() for socket in sockets), return_exceptions=True)
    return {
        "sockets": len(sockets),
        "received": len(collector.latencies_ms),
        "latencies_ms": [round(latency, 3) for latency in collector.latencies_ms],
        "first_at": collector.first_at,
        "last_at": collector.last_at,
        "closed_early": collector.closed_early[:5],
        "closed_early_count": len(collector.closed_early),
        "cpu_s": time.process_time(),
    }


def main() -> None:
    plan = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(asyncio.run(_run(plan))), flush=True)


if __name__ == "__main__":
    main()
