"""Stopping while a dependency is gone (issue 16): every process exits within its grace period plus
``EXIT_MARGIN_S`` after SIGTERM, whatever MongoDB or RabbitMQ does, and its log says what it abandoned.

Each dependency is gone in two ways: killed (connections refused: calls fail within the client's own timeouts) and
frozen (connections stay open and nothing answers, as with a hung host or a network partition: a call already sent
waits on its socket, which for pymongo has no timeout, until its monitor gives up about 30 s later, or for good once
its client is closed). MongoDB is a SecantusDB of the test's own, frozen with SIGSTOP; RabbitMQ is the shared one,
reached through a proxy of the test's own that stops relaying, so other tests never see the outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil
import pytest

from engineroom.core.embedded import EmbeddedDatabase
from engineroom.core.shutdown import EXIT_MARGIN_S
from engineroom.store.client import connect, ensure_indexes
from tests.e2e.test_reliability import FAST_SETTINGS, TokenFor, poll_job, submit
from tests.ports import free_port
from tests.settings import make_settings

if TYPE_CHECKING:
    from tests.e2e.conftest import Process, Stack

#: The grace each process is started with: short, so that a job outlives it.
GRACE_S = 3.0
#: Seconds for the process table to show an exit: a Dramatiq command's parent process notices its worker process's
#: exit, and stops its log watcher, within a second each.
SLACK_S = 3.0


class Relay:
    """A TCP proxy to RabbitMQ that can stop relaying (``freeze``) or drop every connection (``kill``)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.frozen = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # killed
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if self.frozen.is_set():
                    self.frozen.wait()  # and never again: what a frozen broker would not have read stays unread
                    threading.Event().wait()
                sink.sendall(data)

    def freeze(self) -> None:
        self.frozen.set()

    def kill(self) -> None:
        self.listener.close()
        for connection in self.sockets:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
                connection.close()


@pytest.fixture
def relay(amqp_url: str) -> Iterator[Relay]:
    parts = urlsplit(amqp_url)
    proxy = Relay((parts.hostname or "127.0.0.1", parts.port or 5672))
    yield proxy
    proxy.kill()


def through(amqp_url: str, port: int) -> str:
    parts = urlsplit(amqp_url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{port}"))


async def with_indexes(mongodb_url: str, db_name: str) -> None:
    """Make the database's collections and indexes before the processes start. Four processes creating the
    collections of a new SecantusDB at once hung it once in eight suite runs (its connection threads stuck in a
    WiredTiger insert inside ``create_collection``), and this test is about stopping, not starting."""
    client = connect(make_settings(mongodb_url=mongodb_url, mongodb_db=db_name))
    try:
        await ensure_indexes(client[db_name], retention_days=30)
    finally:
        client.close()


async def exit_time_s(process: Process, since: float) -> float:
    """Seconds from ``since`` until the process and every process it started have exited (at most 60 s)."""
    try:
        tree = [psutil.Process(process.popen.pid), *psutil.Process(process.popen.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    deadline = since + 60
    while time.monotonic() < deadline:
        if not any(member.is_running() and member.status() != psutil.STATUS_ZOMBIE for member in tree):
            return time.monotonic() - since
        await asyncio.sleep(0.1)
    return float("inf")


@pytest.mark.parametrize(
    ("dependency", "fault"),
    [("mongodb", "killed"), ("mongodb", "frozen"), ("rabbitmq", "killed"), ("rabbitmq", "frozen")],
)
async def test_every_process_exits_within_its_grace_period_when_a_dependency_is_gone_and_says_what_it_abandoned(
    stack: Stack, token_for: TokenFor, tmp_path: Path, relay: Relay, amqp_url: str, dependency: str, fault: str
) -> None:
    database = EmbeddedDatabase(tmp_path / "db", port=free_port()).start()
    try:
        await with_indexes(database.url, stack.env["ENGINEROOM_MONGODB_DB"])
        stack.env.update(FAST_SETTINGS)
        stack.env["ENGINEROOM_MONGODB_URL"] = database.url
        stack.env["ENGINEROOM_AMQP_URL"] = through(amqp_url, relay.port)
        grace = ["--grace-s", str(GRACE_S)]
        processes = [
            stack.start_worker("--engines", "general", *grace),
            stack.start("scheduler", "scheduler", *grace),
            # an autoscaling supervisor of one worker process, on an engine of its own
            stack.start("supervisor", "worker", "--autoscale", "1:1", "--engines", "discovery_analytics", *grace),
        ]
        base_url = stack.start_api(extra=grace)
        processes.append(stack.processes[-1])
        # Given a worker running a job that will not end within its grace period
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
            token = token_for()
            job = await submit(http, token, "general.demo", {"duration_s": 600, "steps": 1})
            await poll_job(http, token, job["id"], lambda seen: seen["state"] == "running")
        # When the dependency goes away, and every process is asked to stop
        if dependency == "mongodb":
            database.kill() if fault == "killed" else database.freeze()
        else:
            relay.kill() if fault == "killed" else relay.freeze()
        await asyncio.sleep(1.0)  # long enough for calls to be under way (heartbeats beat every second here)
        stopping_at = time.monotonic()
        for process in processes:
            process.popen.send_signal(signal.SIGTERM)
        exits = await asyncio.gather(*(exit_time_s(process, stopping_at) for process in processes))
    finally:
        database.stop()
    took = {process.name: round(seconds, 1) for process, seconds in zip(processes, exits, strict=True)}
    codes = {process.name: process.popen.wait(timeout=5) for process in processes}
    print(f"\nexit times with {dependency} {fault} (grace {GRACE_S} s): {took}, codes {codes}")  # noqa: T201
    # Then each exits within its grace period and the margin (a supervisor: its children's, then its own)
    allowed = {process.name: GRACE_S + EXIT_MARGIN_S + SLACK_S for process in processes}
    allowed["supervisor"] += EXIT_MARGIN_S
    assert all(seconds <= allowed[name] for name, seconds in took.items()), took
    # and the worker says which job it abandoned, and how it comes back
    worker_log = processes[0].log_path.read_text(errors="replace")
    assert f"abandoned job {job['id']}" in worker_log, worker_log[-3000:]
    assert "the scheduler re-queues it" in worker_log
