"""store/errors.py: driver errors leave as ``StoreUnavailable`` with their cause, and transient ones are tried again,
a bounded number of times, only where the operation is safe to repeat.

The real failures come from SecantusDB's ``failCommand`` failpoint, scoped to one client's ``appName`` (it drops that
client's connection, as a MongoDB failing over would), and from a client pointed at a port nobody listens on.
"""

from __future__ import annotations

import ast
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo.errors import AutoReconnect, OperationFailure, PyMongoError, ServerSelectionTimeoutError

from engineroom.core.clock import utcnow
from engineroom.core.config import Settings
from engineroom.core.embedded import free_port, wait_for_port
from engineroom.core.errors import StoreUnavailable
from engineroom.core.ids import new_id
from engineroom.models.job import JobDocument, JobState
from engineroom.store import errors as errors_module
from engineroom.store.client import Database, ping
from engineroom.store.errors import RETRY_BUDGET_S, RETRY_PAUSES_S, run_once, safe_to_repeat
from engineroom.store.jobs import JobStore
from engineroom.store.rate_limits import RateCounters

APP = "store-errors-test"


@pytest.fixture(scope="module")
def test_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SecantusDB of this module's own, with mongod's test commands (``configureFailPoint``) on."""
    executable = shutil.which("secantusd-py")
    if executable is None:
        pytest.skip("secantusd-py is not installed")
    port = free_port("127.0.0.1")
    storage = tmp_path_factory.mktemp("secantus-failpoints")
    command = [executable, "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(storage)]
    server = subprocess.Popen([*command, "--log-level", "WARNING", "--enable-test-commands"])
    try:
        wait_for_port("127.0.0.1", port, 30)
        yield f"mongodb://127.0.0.1:{port}/?retryWrites=false&directConnection=true"
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
async def db(settings: Settings, test_server_url: str) -> AsyncIterator[Database]:
    """The test's database, through a client the failpoints leave alone."""
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(test_server_url, tz_aware=True)
    yield client[settings.mongodb_db]
    await client.admin.command("configureFailPoint", "failCommand", mode="off")
    client.close()


@pytest.fixture
async def flaky_db(settings: Settings, test_server_url: str) -> AsyncIterator[Database]:
    """The same database through a client of its own, whose commands the failpoints drop."""
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(test_server_url, tz_aware=True, appname=APP)
    yield client[settings.mongodb_db]
    client.close()


async def fail_commands(db: Database, names: list[str], times: int) -> None:
    """Drop the flaky client's connection on its next ``times`` commands named."""
    data = {"failCommands": names, "closeConnection": True, "appName": APP}
    await db.client.admin.command("configureFailPoint", "failCommand", mode={"times": times}, data=data)


def _job() -> JobDocument:
    return JobDocument(
        id=new_id(), tenant_id="t", user_id="u", engine="general", task="general.demo", state=JobState.QUEUED,
        created_at=utcnow(),
    )  # fmt: skip


async def test_a_read_outlasting_the_drivers_own_retry_is_tried_again(db: Database, flaky_db: Database) -> None:
    job = await JobStore(db).insert(_job())
    # pymongo retries a read once by itself: two dropped connections reach the store, which tries a third time
    await fail_commands(db, ["find"], 2)
    found = await JobStore(flaky_db).get(job.id)
    assert found is not None and found.id == job.id


async def test_a_failure_that_stays_leaves_as_store_unavailable_with_its_cause_in_bounded_time(
    db: Database, flaky_db: Database
) -> None:
    await fail_commands(db, ["find"], 100)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as raised:
        await JobStore(flaky_db).get(new_id())
    elapsed_s = time.monotonic() - started
    assert isinstance(raised.value.__cause__, PyMongoError)
    # The first try (pymongo's own retry waits up to 0.5 s for the server's next check), then the retries' budget
    assert elapsed_s < 0.6 + RETRY_BUDGET_S + 1.0  # slack for a loaded machine


async def test_a_write_that_must_not_be_repeated_is_tried_once(db: Database, flaky_db: Database) -> None:
    window = utcnow().replace(microsecond=0)
    expires = window + timedelta(minutes=1)
    await fail_commands(db, ["findAndModify"], 1)  # no retryable writes: the driver does not repeat it
    with pytest.raises(StoreUnavailable) as raised:
        await RateCounters(flaky_db).add("alice", 1, window_start=window, expires_at=expires)
    assert isinstance(raised.value.__cause__, AutoReconnect)
    # The failpoint is used up: a repeat would have gone through and counted
    assert await RateCounters(db).add("alice", 1, window_start=window, expires_at=expires) == 1


async def test_no_server_at_all_fails_at_once_without_a_retry(settings: Settings) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(
        f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=1000
    )
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as raised:
        await ping(client[settings.mongodb_db])
    elapsed = time.monotonic() - started
    client.close()
    assert isinstance(raised.value.__cause__, ServerSelectionTimeoutError)
    assert 1.0 <= elapsed < 2.0  # one selection timeout: a repeat would wait as long again


class _Flaky:
    """Fails ``failures`` times with ``error``, then answers."""

    def __init__(self, error: Exception, failures: int) -> None:
        self.error, self.failures, self.calls = error, failures, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "answer"


def _labelled(label: str) -> OperationFailure:
    return OperationFailure("try again", code=112, details={"code": 112, "errorLabels": [label]})


@pytest.mark.parametrize("label", ["RetryableWriteError", "TransientTransactionError"])
async def test_an_error_labelled_transient_is_tried_again(label: str) -> None:
    operation = _Flaky(_labelled(label), failures=len(RETRY_PAUSES_S))
    assert await safe_to_repeat(operation)() == "answer"
    assert operation.calls == len(RETRY_PAUSES_S) + 1


async def test_tries_are_bounded() -> None:
    operation = _Flaky(AutoReconnect("connection reset"), failures=10)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as raised:
        await safe_to_repeat(operation)()
    assert operation.calls == len(RETRY_PAUSES_S) + 1
    assert isinstance(raised.value.__cause__, AutoReconnect)
    assert time.monotonic() - started < RETRY_BUDGET_S


async def test_an_error_that_is_not_transient_is_not_tried_again() -> None:
    operation = _Flaky(OperationFailure("bad query", code=2), failures=1)
    with pytest.raises(StoreUnavailable) as raised:
        await safe_to_repeat(operation)()
    assert operation.calls == 1 and isinstance(raised.value.__cause__, OperationFailure)


async def test_run_once_never_repeats() -> None:
    operation = _Flaky(AutoReconnect("connection reset"), failures=1)
    with pytest.raises(StoreUnavailable):
        await run_once(operation)()
    assert operation.calls == 1


#: What the driver is asked to do: a function that awaits one of these talks to MongoDB.
_DRIVER_CALLS = frozenset(
    {
        "aggregate", "bulk_write", "command", "count_documents", "create_index", "create_indexes", "delete_many",
        "delete_one", "drop_index", "find", "find_one", "find_one_and_update", "insert_many", "insert_one",
        "replace_one", "update_many", "update_one",
    }
)  # fmt: skip
#: Functions that talk to MongoDB undecorated, and why.
_UNDECORATED = {
    # Start-up: a MongoDB that fails there stops the process with the driver's own error.
    ("client.py", "_ensure_ttl"),
    ("client.py", "ensure_indexes"),
    ("client.py", "chosen_index_set"),
    ("client.py", "_replace_old_replay_indexes"),
    ("client.py", "_drop"),
    # Called only by insert_all (run_once), which must tell pymongo's InvalidOperation (a server before 8.0) from a
    # failure before it is translated.
    ("notifications.py", "_insert_in_order"),
    # Called only by put and get_or_create (safe_to_repeat), which try again on a DuplicateKeyError first.
    ("preferences.py", "_find_one_and_upsert"),
}


def test_every_store_function_that_talks_to_mongodb_says_whether_it_may_be_repeated() -> None:
    store = Path(errors_module.__file__).parent
    unmarked = []
    for path in sorted(store.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef):
                continue
            decorators = {ast.unparse(decorator) for decorator in node.decorator_list}
            calls = {
                call.func.attr
                for call in ast.walk(node)
                if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            }
            if calls & _DRIVER_CALLS and not decorators & {"safe_to_repeat", "run_once"}:
                unmarked.append((path.name, node.name))
    assert sorted(set(unmarked) - _UNDECORATED) == []
