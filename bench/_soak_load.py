"""The soak's load: a seeded mix of jobs and workflows at a bounded rate, cancels, queue pauses, WebSocket listeners.

Every submission is drawn from ``MIX`` (a kind and its share); each kind says what its final state should be, so
the report can show outcomes by kind. Submissions run as tasks at ``rate``/s with at most ``MAX_IN_FLIGHT`` HTTP
requests open: a slow gateway makes the soak fall behind (counted), never piles requests up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

ENGINE = "general"
DEMO = f"{ENGINE}.demo"
#: HTTP requests the load keeps open at most.
MAX_IN_FLIGHT = 16
#: Longest ``delay_s`` of a delayed job: well inside the grace period, so none is still due when it ends.
MAX_DELAY_S = 20.0
#: Seconds a closed listener waits before it reconnects.
RECONNECT_S = 1.0

#: Kind -> share of submissions. ``expected`` below says which final states each kind should reach.
MIX: dict[str, float] = {
    "ok": 0.50,
    "fail": 0.08,
    "retry_then_ok": 0.10,
    "retry_exhausted": 0.05,
    "delayed": 0.12,
    "cancel": 0.10,
    "workflow": 0.05,
}
EXPECTED: dict[str, tuple[str, ...]] = {
    "ok": ("completed",),
    "fail": ("failed",),
    "retry_then_ok": ("completed",),
    "retry_exhausted": ("failed",),
    "delayed": ("completed",),
    "cancel": ("cancelled", "completed"),  # completed: the cancel came after the job finished
    "workflow": ("completed",),
}


@dataclass
class LoadStats:
    """What the load did: ids by kind, HTTP answers, cancels, pauses, WebSocket frames."""

    job_kinds: dict[str, str] = field(default_factory=dict)
    workflow_ids: list[str] = field(default_factory=list)
    submitted: Counter[str] = field(default_factory=Counter)
    http: Counter[str] = field(default_factory=Counter)
    http_errors: list[str] = field(default_factory=list)
    behind: int = 0
    pauses: int = 0
    ws_frames: Counter[str] = field(default_factory=Counter)
    #: Frames per listener: the user's sockets all hear the same events, so their counts should match.
    ws_by_listener: Counter[str] = field(default_factory=Counter)
    ws_closed: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        """As JSON: counts, and the ids only counted (the database has them)."""
        return {
            "jobs": len(self.job_kinds),
            "workflows": len(self.workflow_ids),
            "submitted": dict(self.submitted),
            "http": dict(sorted(self.http.items())),
            "http_errors": self.http_errors,
            "behind": self.behind,
            "pauses": self.pauses,
            "ws_frames": dict(self.ws_frames),
            "ws_by_listener": dict(self.ws_by_listener),
            "ws_closed": self.ws_closed,
        }

    def answered(self, what: str, response: httpx.Response) -> None:
        self.http[f"{what} {response.status_code}"] += 1
        if response.status_code >= 400 and len(self.http_errors) < 20:
            self.http_errors.append(f"{what} {response.status_code}: {response.text[:200]}")


def demo_body(rng: random.Random, **payload: Any) -> dict[str, Any]:
    """A ``general.demo`` job of 0-2 s in 1-5 progress steps, with ``payload`` on top."""
    base = {"duration_s": round(rng.uniform(0.0, 2.0), 2), "steps": rng.randint(1, 5)}
    return {"task": DEMO, "payload": {**base, **payload}}


def job_body(kind: str, rng: random.Random) -> dict[str, Any]:
    """The ``POST /jobs`` body of a job of ``kind`` (every kind but ``workflow``)."""
    if kind == "fail":
        return demo_body(rng, fail="permanent")
    if kind == "retry_then_ok":
        return {**demo_body(rng, fail_attempts=rng.randint(1, 2)), "max_retries": 3}
    if kind == "retry_exhausted":
        return {**demo_body(rng, fail="transient"), "max_retries": 2}
    if kind == "delayed":
        return {**demo_body(rng), "delay_s": round(rng.uniform(1.0, MAX_DELAY_S), 1)}
    if kind == "cancel":
        return {"task": DEMO, "payload": {"duration_s": 2.0, "steps": 8}}
    return demo_body(rng)


def workflow_body(rng: random.Random) -> dict[str, Any]:
    """Two demo steps, the second after the first, and ``echo_inputs`` after both."""
    return {
        "name": "soak",
        "steps": [
            {"id": "a", **demo_body(rng)},
            {"id": "b", **demo_body(rng), "depends_on": ["a"]},
            {"id": "c", "task": f"{ENGINE}.echo_inputs", "depends_on": ["a", "b"]},
        ],
    }


class Load:
    """Submits the mix, cancels the ``cancel`` kind mid-run, pauses the queue now and then."""

    def __init__(self, client: httpx.AsyncClient, admin_token: str, stats: LoadStats, seed: int) -> None:
        self.client, self.admin_token, self.stats = client, admin_token, stats
        self.rng = random.Random(seed)
        self.gate = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self, rate: float, until: float) -> None:
        """Start one submission every 1/``rate`` s until ``until`` (``time.monotonic()``), then wait for them."""
        start, number = time.monotonic(), 0
        while (due := start + number / rate) < until:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if self.gate.locked():
                self.stats.behind += 1
            kind = self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
            task = asyncio.create_task(self._submit(kind))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            number += 1
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _post(self, what: str, url: str, body: dict[str, Any], token: str | None = None) -> httpx.Response | None:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        async with self.gate:
            try:
                response = await self.client.post(url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                self.stats.http[f"{what} {type(exc).__name__}"] += 1
                return None
        self.stats.answered(what, response)
        return response

    async def _submit(self, kind: str) -> None:
        if kind == "workflow":
            response = await self._post("POST /workflows", "/workflows", workflow_body(self.rng))
            if response is not None and response.status_code == 201:
                self.stats.workflow_ids.append(response.json()["id"])
                self.stats.submitted[kind] += 1
            return
        response = await self._post("POST /jobs", "/jobs", job_body(kind, self.rng))
        if response is None or response.status_code != 202:
            return
        job_id = response.json()["id"]
        self.stats.job_kinds[job_id] = kind
        self.stats.submitted[kind] += 1
        if kind == "cancel":
            await asyncio.sleep(self.rng.uniform(0.2, 1.5))  # mostly mid-run: the job takes 2 s
            await self._post("POST /jobs/{id}/cancel", f"/jobs/{job_id}/cancel", {})

    async def pauses(self, every_s: float, for_s: float, until: float) -> None:
        """Pause the engine's queue for ``for_s`` every ``every_s`` while before ``until``; always resume it."""
        while time.monotonic() + every_s < until:
            await asyncio.sleep(every_s)
            body = {"reason": "soak: pause and resume under load"}
            await self._post("POST /queues/pause", f"/queues/{ENGINE}/pause", body, self.admin_token)
            self.stats.pauses += 1
            try:
                await asyncio.sleep(for_s)
            finally:
                await self._post("POST /queues/resume", f"/queues/{ENGINE}/resume", {}, self.admin_token)


async def listen(name: str, url: str, stats: LoadStats, stop: asyncio.Event, ready: asyncio.Event) -> None:
    """Hold a WebSocket open until ``stop``, counting frames by type and by listener; set ``ready`` once the
    server registered it (it answered a ping); reconnect (and record why) if it closes."""
    while not stop.is_set():
        try:
            async with connect(url, max_size=None) as socket:
                await socket.send('{"op": "ping"}')
                while not stop.is_set():
                    receive = asyncio.ensure_future(socket.recv())
                    stopping = asyncio.ensure_future(stop.wait())
                    done, _ = await asyncio.wait({receive, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    stopping.cancel()
                    if receive not in done:
                        receive.cancel()
                        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                            await receive
                        return
                    kind = json.loads(receive.result()).get("type", "?")
                    stats.ws_frames[kind] += 1
                    stats.ws_by_listener[name] += 1
                    if kind == "pong":
                        ready.set()
        except (ConnectionClosed, InvalidHandshake, OSError) as exc:
            stats.ws_closed.append(f"{time.strftime('%H:%M:%S')} {exc!r}"[:200])
            await asyncio.sleep(RECONNECT_S)
