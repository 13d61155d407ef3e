"""``api/static/engineroom.js`` in a real browser against real gateway, worker and scheduler processes.

The page is one the gateway serves (``/healthz``: chromium's local-network checks refuse WebSocket connections to
127.0.0.1 from a page Playwright made up, which has no address), and it loads the client as any page would, with a
``<script src="/static/engineroom.js">`` element. The tests are plain functions: Playwright's sync API does not run
inside an asyncio loop.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

if TYPE_CHECKING:
    from playwright.sync_api import Page, WebSocket

    from tests.e2e.conftest import Stack

TokenFor = Callable[..., str]
#: Seconds a job may take to finish, or a condition on what the page or a socket heard to hold.
WAIT_S = 30.0
#: A page of the gateway's, to be on its origin.
PAGE_PATH = "/healthz"
#: Starts a client that records what it hears in ``window.seen``; options come from the test.
START_CLIENT = """([token, options]) => {
  window.seen = {events: [], statuses: [], errors: [], controls: []};
  window.client = new EngineroomClient(Object.assign({
    token,
    onEvent: (event) => seen.events.push(event),
    onStatus: (status) => seen.statuses.push(status),
    onError: (error) => seen.errors.push(error),
    onControl: (frame) => seen.controls.push(frame),
  }, options));
  client.connect();
}"""
#: Short backoff so a restarted gateway is found again within a second or two.
FAST_RECONNECT = {"minReconnectDelayMs": 200, "maxReconnectDelayMs": 1000}
DEMO = {"duration_s": 0.2, "steps": 3}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def open_client_page(page: Page, base_url: str, token: str, **options: Any) -> list[list[dict[str, Any]]]:
    """Load the test page from ``base_url``, start a client on it; returns the frames each socket sent, per socket."""
    sent: list[list[dict[str, Any]]] = []

    def record(socket: WebSocket) -> None:
        frames: list[dict[str, Any]] = []
        sent.append(frames)
        socket.on("framesent", lambda payload: frames.append(json.loads(payload)))

    page.on("websocket", record)
    page.goto(base_url + PAGE_PATH)
    page.add_script_tag(url="/static/engineroom.js")
    page.evaluate(START_CLIENT, [token, options])
    return sent


def seen(page: Page) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = page.evaluate("window.seen")
    return found


def wait_for_status(page: Page, status: str, count: int = 1) -> None:
    page.wait_for_function(
        "([status, count]) => seen.statuses.filter((s) => s === status).length >= count", arg=[status, count]
    )


def wait_for_terminal_events(page: Page, job_ids: list[str]) -> None:
    page.wait_for_function(
        """(jobIds) => jobIds.every((id) => seen.events.some(
             (e) => e.job_id === id && ["job.completed", "job.failed"].includes(e.type)))""",
        arg=job_ids,
        timeout=WAIT_S * 1000,
    )


def wait_for_frames(page: Page, frames: list[dict[str, Any]], count: int) -> None:
    """Playwright hands ``framesent`` to Python asynchronously: let it pump events until ``count`` frames are in."""
    deadline = time.monotonic() + WAIT_S
    while len(frames) < count:
        assert time.monotonic() < deadline, f"only {frames} sent after {WAIT_S} s"
        page.wait_for_timeout(50)


def submit(http: httpx.Client, token: str) -> str:
    response = http.post("/jobs", json={"task": "general.demo", "payload": DEMO}, headers=auth(token))
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def wait_finished(http: httpx.Client, token: str, job_ids: list[str]) -> None:
    deadline = time.monotonic() + WAIT_S
    for job_id in job_ids:
        while http.get(f"/jobs/{job_id}", headers=auth(token)).json()["state"] != "completed":
            assert time.monotonic() < deadline, f"job {job_id} did not complete in {WAIT_S} s"
            time.sleep(0.1)


class Listener:
    """A plain WebSocket client read in a thread: the record of which events there were to miss."""

    def __init__(self, socket: ClientConnection) -> None:
        self.events: list[dict[str, Any]] = []
        hello = json.loads(socket.recv(timeout=WAIT_S))
        assert hello["type"] == "hello"
        self._socket = socket
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @classmethod
    @contextlib.contextmanager
    def on(cls, base_url: str, token: str) -> Iterator[Listener]:
        with connect(base_url.replace("http://", "ws://") + f"/ws?token={token}") as socket:
            listener = cls(socket)
            yield listener
        listener._reader.join(timeout=5)

    def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            for message in self._socket:
                frame = json.loads(message)
                if "." in frame.get("type", "") and "id" in frame:
                    self.events.append(frame)

    def terminal_events_of(self, job_ids: list[str]) -> bool:
        done = {event["job_id"] for event in self.events if event["type"] in ("job.completed", "job.failed")}
        return done >= set(job_ids)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {WAIT_S} s"
        time.sleep(0.05)


@pytest.fixture
def running(stack: Stack) -> Iterator[Stack]:
    """A worker and a scheduler; each test starts its gateways."""
    stack.start_worker()
    stack.start_scheduler()
    yield stack


def test_a_page_sees_every_event_of_a_job_to_completion_through_the_client(
    running: Stack, page: Page, token_for: TokenFor
) -> None:
    base_url = running.start_api()
    token = token_for("alice", "acme")
    sockets = open_client_page(page, base_url, token)
    wait_for_status(page, "open")

    with httpx.Client(base_url=base_url) as http:
        job_id = submit(http, token)
        wait_for_terminal_events(page, [job_id])
    heard = seen(page)

    types = [event["type"] for event in heard["events"] if event["job_id"] == job_id]
    assert types[0] == "job.queued" and types[-1] == "job.completed"
    assert {"job.started", "job.progress"} <= set(types)
    ids = [event["id"] for event in heard["events"]]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    assert page.evaluate("client.lastEventId") == ids[-1]
    assert heard["statuses"] == ["connecting", "open"]
    # The token travels as a subprotocol, never in the URL (where proxies and access logs would keep it).
    assert len(sockets) == 1 and token not in page.evaluate("client.url")


@pytest.mark.timeout(240)  # a gateway restart, on a machine that may be busy
def test_after_its_gateway_restarts_the_client_subscribes_again_then_resumes_after_its_last_event(
    running: Stack, page: Page, token_for: TokenFor
) -> None:
    base_url = running.start_api()
    token = token_for("alice", "acme")
    sockets = open_client_page(page, base_url, token, topics=["notifications"], **FAST_RECONNECT)
    wait_for_status(page, "open")
    with httpx.Client(base_url=base_url) as http:
        first = submit(http, token)
        wait_for_terminal_events(page, [first])
    last_before = page.evaluate("client.lastEventId")

    gateway = next(process for process in running.processes if process.name == "api")
    gateway.stop()
    wait_for_status(page, "reconnecting")
    running.start_api("api-again", port=httpx.URL(base_url).port)
    wait_for_status(page, "open", count=2)

    # On the new connection: the topics first, then the resume from the last event received.
    wait_for_frames(page, sockets[-1], 2)
    assert sockets[-1][:2] == [
        {"op": "subscribe", "topics": ["notifications"]},
        {"op": "resume", "after": last_before},
    ]
    with httpx.Client(base_url=base_url) as http:
        second = submit(http, token)
        wait_for_terminal_events(page, [second])
    ids = [event["id"] for event in seen(page)["events"]]
    assert len(ids) == len(set(ids))


@pytest.mark.timeout(240)
def test_events_missed_while_the_gateway_was_down_arrive_once_each_in_id_order(
    running: Stack, page: Page, token_for: TokenFor
) -> None:
    """Needs the server's ``resume`` (replay from the ``events`` collection)."""
    base_url = running.start_api()
    other_gateway = running.start_api("api-other")
    token = token_for("alice", "acme")
    open_client_page(page, base_url, token, **FAST_RECONNECT)
    wait_for_status(page, "open")
    with httpx.Client(base_url=base_url) as http:
        before = submit(http, token)
        wait_for_terminal_events(page, [before])

    # Given the page's gateway down while three jobs run to completion (submitted through another gateway, where a
    # plain client records every event there was to miss)
    next(process for process in running.processes if process.name == "api").stop()
    wait_for_status(page, "reconnecting")
    with Listener.on(other_gateway, token) as listener, httpx.Client(base_url=other_gateway) as http:
        missed_jobs = [submit(http, token) for _ in range(3)]
        wait_finished(http, token, missed_jobs)
        wait_until(lambda: listener.terminal_events_of(missed_jobs), "the listener heard the jobs finish")
    missed = sorted(event["id"] for event in listener.events if event["job_id"] in missed_jobs)

    # When the gateway comes back on the same address
    running.start_api("api-again", port=httpx.URL(base_url).port)
    wait_for_status(page, "open", count=2)
    page.wait_for_function(
        """() => seen.controls.some((frame) => frame.type === "resumed" || frame.type === "error")"""
    )
    heard = seen(page)
    assert any(frame["type"] == "resumed" for frame in heard["controls"]), f"no resume: {heard['errors']}"
    wait_for_terminal_events(page, missed_jobs)

    # Then the client heard each missed event once, in id order, and nothing twice
    heard = seen(page)
    replayed = [event["id"] for event in heard["events"] if event["job_id"] in missed_jobs]
    assert replayed == missed
    ids = [event["id"] for event in heard["events"]]
    assert len(ids) == len(set(ids))


def test_a_refused_token_ends_in_unauthorized_without_a_reconnect_loop(
    stack: Stack, page: Page, token_for: TokenFor
) -> None:
    base_url = stack.start_api()
    sockets = open_client_page(page, base_url, "not-a-valid-token", **FAST_RECONNECT)

    wait_for_status(page, "unauthorized")
    page.wait_for_timeout(3 * FAST_RECONNECT["maxReconnectDelayMs"])

    heard = seen(page)
    assert heard["statuses"] == ["connecting", "unauthorized"]
    assert [error["type"] for error in heard["errors"]] == ["unauthorized"]
    assert len(sockets) == 1, "the client tried again with a token the server refused"
