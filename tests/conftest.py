"""Shared fixtures: settings, the real RabbitMQ and SecantusDB, and in-process brokers (after dramatiq's own); and
what lets the suite run on several pytest-xdist workers (``tests/parallel.py``)."""

from __future__ import annotations

import functools
import os
import signal
import threading
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pika
import pytest

from engineroom.core.config import ENGINES, Settings
from engineroom.core.embedded import EmbeddedDatabase, is_rabbitmq_reachable
from engineroom.services.tokens import issue_token
from tests.mongomock_fixes import keep_index_options
from tests.parallel import RunLock, group_for_xdist, lock_directory, own_vhost, runs_alone
from tests.ports import free_port
from tests.settings import TEST_JWT_SECRET, make_settings

AMQP_URL = os.environ.get("ENGINEROOM_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _unavailable(what: str) -> None:
    """Under CI a missing service fails the run, as dramatiq's ``check_rabbitmq`` does; locally it skips."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} is required in CI and is not available")
    pytest.skip(f"{what} is not available")


def pytest_configure(config: pytest.Config) -> None:
    keep_index_options()
    hear_interrupts()


def hear_interrupts() -> None:
    """Started in the background by a non-interactive shell (as CI may start ``.ci/run``), pytest and every process
    a test starts inherit SIGINT ignored, and a process stays deaf to it until it installs its own handler: one a
    test interrupts in its first second then runs on, and the test waits 15 s before it kills it (the scheduler of
    ``test_due_jobs_fire_after_the_scheduler_was_down``: 21 s in CI, 3.5 s at a terminal). The tests press Ctrl-C
    as at a terminal: restore Python's default, which the processes they start inherit as the default action."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    group_for_xdist(items)  # before xdist reads the groups (``--dist loadgroup``)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """Under xdist each test holds the run lock (``tests/parallel.py``), taken outside pytest-timeout's timer: a
    test waiting for another to end is not timed out for it."""
    lock = run_lock(item.config)
    if lock is None:
        return (yield)
    with lock.held(alone=runs_alone(item), next_alone=runs_alone(nextitem)):
        return (yield)


@functools.cache
def run_lock(config: pytest.Config) -> RunLock | None:
    """This worker's handle on the run lock; None outside xdist."""
    directory = lock_directory(config)
    return None if directory is None else RunLock(directory)


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """The real RabbitMQ; under xdist on a vhost of the worker's own."""
    if not is_rabbitmq_reachable(AMQP_URL):
        _unavailable(f"RabbitMQ at {AMQP_URL}")
    with own_vhost(AMQP_URL) as url:
        yield url


@pytest.fixture(scope="session")
def mongodb_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One SecantusDB server process for the session (so one per xdist worker, on a port of the worker's range);
    each test uses its own database on it."""
    database = EmbeddedDatabase(tmp_path_factory.mktemp("secantus") / "data", port=free_port())
    try:
        database.start()
    except RuntimeError as exc:
        _unavailable(f"SecantusDB ({exc})")
    yield database.url
    database.stop()


@pytest.fixture
def namespace(amqp_url: str) -> Iterator[str]:
    """A queue and exchange prefix of this test's own, deleted afterwards, so runs never see each other's messages."""
    prefix = f"test{uuid.uuid4().hex[:8]}."
    yield prefix
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    for queue in (*ENGINES, "notifications"):
        for suffix in ("", ".DQ", ".XQ"):
            channel.queue_delete(f"{prefix}{queue}{suffix}")
    channel.queue_delete(f"{prefix}engineroom.notifier")
    channel.exchange_delete(f"{prefix}engineroom.events")
    connection.close()


@pytest.fixture
def jwt_secret() -> str:
    return TEST_JWT_SECRET


@pytest.fixture
def db_name() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(db_name: str) -> Settings:
    """Settings for in-process tests; the database URL is filled in by fixtures that need a server."""
    # Webhook receivers in tests listen on loopback.
    return make_settings(mongodb_db=db_name, namespace="unit.", webhook_allow_private=True)


def make_token(user: str = "alice", tenant: str = "acme", *, admin: bool = False) -> str:
    return issue_token(
        make_settings(),
        user_id=user,
        tenant_id=tenant,
        admin=admin,
    )


TokenFor = Callable[..., str]


@pytest.fixture
def token_for() -> TokenFor:
    """``token_for("bob", "acme", admin=True)``: a valid token signed with the test secret."""
    return make_token


@pytest.fixture
def tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@dataclass
class WebhookCall:
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """A local HTTP server that records every POST and answers with ``statuses`` in turn (then 200)."""

    url: str
    statuses: list[int] = field(default_factory=list)
    calls: list[WebhookCall] = field(default_factory=list)


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                receiver.calls.append(WebhookCall(dict(self.headers.items()), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return  # keep test output quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/engineroom"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()


@dataclass
class MailSink:
    """A real SMTP server (aiosmtpd) on loopback that keeps every message it accepts."""

    port: int
    messages: list[tuple[list[str], EmailMessage]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"


@pytest.fixture
def mail_sink() -> Iterator[MailSink]:
    from aiosmtpd.controller import Controller

    sink = MailSink(port=free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's hook)
            message = message_from_bytes(envelope.content, policy=policy.default)
            assert isinstance(message, EmailMessage)
            sink.messages.append((list(envelope.rcpt_tos), message))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=sink.port)
    controller.start()
    yield sink
    controller.stop()
