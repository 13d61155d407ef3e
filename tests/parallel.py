"""What running the suite on several pytest-xdist workers (``-n 3``) needs beyond a database per worker (each
worker is a session of its own, so the session's SecantusDB already is): a RabbitMQ vhost per worker, a lock that
lets a test run with no other test alongside, and groups that keep tests sharing a module's fixture together."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pytest

#: Tests that load both cores on purpose run one after the other on one worker (``--dist loadgroup``).
LOADS_CORES_GROUP = "loads-cores"
#: Tests that run with no other test alongside run one after the other on one worker, first.
ALONE_GROUP = "alone"
#: Seconds one ``rabbitmqctl`` call may take (it boots an Erlang VM: 1-3 s).
RABBITMQCTL_TIMEOUT_S = 60


def xdist_worker() -> str | None:
    """``gw0``, ``gw1``, ... in a pytest-xdist worker; None in a run without workers."""
    return os.environ.get("PYTEST_XDIST_WORKER")


def _rabbitmqctl(*args: str) -> bool:
    try:
        result = subprocess.run(["rabbitmqctl", *args], capture_output=True, timeout=RABBITMQCTL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@contextlib.contextmanager
def own_vhost(amqp_url: str) -> Iterator[str]:
    """``amqp_url`` on a vhost of this worker's own, deleted afterwards; ``amqp_url`` itself outside xdist, or when
    the broker is not local or ``rabbitmqctl`` cannot create one (queue prefixes still keep tests apart)."""
    worker = xdist_worker()
    parts = urlsplit(amqp_url)
    if worker is None or parts.hostname not in ("127.0.0.1", "localhost") or shutil.which("rabbitmqctl") is None:
        yield amqp_url
        return
    vhost = f"engineroom-test-{worker}-{os.getpid()}"
    user = parts.username or "guest"
    if not (_rabbitmqctl("add_vhost", vhost) and _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")):
        _rabbitmqctl("delete_vhost", vhost)
        yield amqp_url
        return
    try:
        yield urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))
    finally:
        _rabbitmqctl("delete_vhost", vhost)


def close_connections_on_own_vhost(amqp_url: str) -> bool:
    """Have RabbitMQ close every connection on ``amqp_url``'s vhost, as a reset or a missed heartbeat would; False
    (nothing closed) where that vhost is not one of a worker's own (``own_vhost``): others share it."""
    vhost = unquote(urlsplit(amqp_url).path.lstrip("/"))
    if not vhost.startswith("engineroom-test-"):
        return False
    return _rabbitmqctl("close_all_connections", "-p", vhost, "closed by a test")


def lock_directory(config: pytest.Config) -> Path | None:
    """A directory all the workers of this run share (named for xdist's run id); None outside xdist."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return None
    directory = Path(tempfile.gettempdir()) / f"engineroom-pytest-{workerinput['testrunuid']}"
    directory.mkdir(exist_ok=True)
    return directory


class RunLock:
    """Held around each test under xdist: shared by ordinary tests, exclusive for one that must run alone (it stops
    RabbitMQ, or its figure depends on the machine's load). A test waiting to run alone holds the turnstile, so the
    other workers' next tests wait behind it rather than keep the shared lock taken for ever.

    A worker keeps the lock exclusive from one test that runs alone to the next (they share a group, so one worker
    runs them all back to back): released between them, the other worker ran one test of its own in each gap, alone
    too, while this one waited for it (the first 100 s of a run were serial, 60 s of them tests that needed it)."""

    def __init__(self, directory: Path) -> None:
        self._turnstile = (directory / "turnstile.lock").open("a")
        self._run = (directory / "run.lock").open("a")
        self._alone = False

    @contextlib.contextmanager
    def held(self, *, alone: bool, next_alone: bool) -> Iterator[None]:
        if not self._alone:
            self._take(alone=alone)
        try:
            yield
        finally:
            if not (alone and next_alone):
                self._release()

    def _take(self, *, alone: bool) -> None:
        fcntl.flock(self._turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(self._run, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(self._turnstile, fcntl.LOCK_UN)
        self._alone = alone

    def _release(self) -> None:
        fcntl.flock(self._run, fcntl.LOCK_UN)
        if self._alone:
            fcntl.flock(self._turnstile, fcntl.LOCK_UN)
        self._alone = False


def runs_alone(item: pytest.Item | None) -> bool:
    return item is not None and item.get_closest_marker("alone") is not None


def shares_module_fixture(item: pytest.Item) -> bool:
    """Whether the test uses a fixture built once per module (a gateway, a browser): its module's tests then run
    on one worker, which builds it once."""
    if not isinstance(item, pytest.Function):
        return False
    definitions = item._fixtureinfo.name2fixturedefs.values()
    return any(definition.scope in ("module", "package") for chain in definitions for definition in chain)


def group_for_xdist(items: list[pytest.Item]) -> None:
    """Add an ``xdist_group`` (``--dist loadgroup``) to the tests that must share a worker: those that run alone, one
    after another on one worker and first (``--no-loadscope-reorder`` keeps this order: the other worker then waits
    once, early); those loading both cores, one after another; and each module's tests that share a module-scoped
    fixture."""
    items.sort(key=lambda item: not runs_alone(item))
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        if runs_alone(item):
            item.add_marker(pytest.mark.xdist_group(ALONE_GROUP))
        elif item.get_closest_marker("loads_cores") is not None:
            item.add_marker(pytest.mark.xdist_group(LOADS_CORES_GROUP))
        elif shares_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
