"""Real processes: ``engineroom api`` and ``engineroom worker`` against SecantusDB and the real RabbitMQ; and a real
browser (Debian's chromium driven by Playwright) for the JavaScript client and the dashboard."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import httpx
import psutil
import pytest

from tests.ports import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

HERE = Path(__file__).resolve().parent

#: Seconds a process gets to become ready.
START_TIMEOUT_S = 30.0
#: Seconds between two readiness checks of a starting gateway: ~100 start in a run, each waiting half of it.
READY_POLL_S = 0.05
#: The system's chromium (``apt-get install chromium``; ``.ci/run`` installs it): Playwright cannot download its
#: own browser builds here, so it drives this one.
CHROMIUM = os.environ.get("ENGINEROOM_TEST_CHROMIUM", "/usr/bin/chromium")
#: Headless, and nothing that reaches out to the network or needs a sandbox (CI runs as root).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Milliseconds a page action or ``wait_for_function`` may take before it fails.
PAGE_TIMEOUT_MS = 20_000


@dataclass
class Process:
    """A child process whose output goes to a log file, shown when a test fails."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    #: Started in a session of its own: ``kill_group`` reaches its children too (dramatiq forks its workers).
    own_group: bool = False
    interrupted: bool = False

    def interrupt(self) -> None:
        """Ask it to shut down (SIGINT) without waiting; once only: Dramatiq takes a second signal as "kill now"."""
        if self.popen.poll() is None and not self.interrupted:
            self.popen.send_signal(signal.SIGINT)
            self.interrupted = True

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.interrupt()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                if self.own_group:
                    self.kill_group()
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def kill_group(self) -> None:
        """SIGKILL the process and every child it forked (only for processes started with ``new_session``)."""
        assert self.own_group, f"{self.name} shares the test's process group"
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self.popen.wait()

    def kill_tree(self) -> None:
        """SIGKILL the process, its group and every descendant, including those in groups of their own (an autoscale
        supervisor's children): nothing a test started outlives it."""
        try:
            descendants = psutil.Process(self.popen.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        if self.own_group:
            self.kill_group()
        else:
            self.popen.kill()
        for child in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        self.popen.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]


@dataclass
class Stack:
    """The processes of one test, and where to reach them."""

    env: dict[str, str]
    log_dir: Path
    processes: list[Process] = field(default_factory=list)

    def start(self, name: str, *args: str, new_session: bool = True, env: Mapping[str, str] | None = None) -> Process:
        """Run ``engineroom *args`` with ``self.env`` (plus ``env``), in a group of its own (``new_session``), so
        ``kill_group`` and the teardown reach the processes it forks."""
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "engineroom.cli", *args],
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=new_session,
            )
        process = Process(name, popen, log_path, own_group=new_session)
        self.processes.append(process)
        return process

    def load_tasks(self, module: str, source: str) -> None:
        """Have the processes started from now on load the task module ``module`` (``source``, written beside their
        logs), as ``ENGINEROOM_TASK_MODULES`` loads a user's."""
        (self.log_dir / f"{module}.py").write_text(source)
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.log_dir), self.env.get("PYTHONPATH")]))
        self.env["ENGINEROOM_TASK_MODULES"] = module

    def start_api(
        self,
        name: str = "api",
        *,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        extra: Sequence[str] = (),
    ) -> str:
        """Start a gateway (on ``port``, else a free one, with ``extra`` options) and return its base URL once
        ``/readyz`` answers 200."""
        port = port or free_port()
        process = self.start(name, "api", "--host", "127.0.0.1", "--port", str(port), *extra, env=env)
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise AssertionError(f"{name} exited:\n{process.log()}")
            try:
                if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                    return base_url
            except httpx.TransportError:
                pass
            time.sleep(READY_POLL_S)
        raise AssertionError(f"{name} not ready after {START_TIMEOUT_S} s:\n{process.log()}")

    def start_worker(self, *extra: str, name: str = "worker", new_session: bool = True) -> Process:
        """A worker process; later options in ``extra`` (``--threads 1``) override the defaults."""
        return self.start(name, "worker", "--processes", "1", "--threads", "8", *extra, new_session=new_session)

    def start_scheduler(self, name: str = "scheduler") -> Process:
        return self.start(name, "scheduler")

    def stop(self) -> None:
        """Shut every process down gracefully: interrupt them all at once, then wait for each, so shutdowns overlap
        (a Dramatiq worker command drains in ~3 s, a gateway in ~1 s)."""
        for process in reversed(self.processes):
            process.interrupt()
        for process in reversed(self.processes):
            process.stop()

    def kill(self) -> None:
        """End the test's processes with SIGKILL (the teardown): graceful shutdown is tested where it matters, with
        ``stop`` in the test body, and waiting for it after every test cost ~3 s each."""
        for process in reversed(self.processes):
            process.kill_tree()

    def logs(self) -> str:
        return "\n".join(f"--- {process.name} ---\n{process.log()}" for process in self.processes)


def listed_workers(base_url: str, admin_token: str) -> list[dict[str, Any]]:
    """The worker processes ``GET /workers`` lists (schedulers left out)."""
    response = httpx.get(f"{base_url}/workers", headers={"Authorization": f"Bearer {admin_token}"}, timeout=5)
    assert response.status_code == 200, response.text
    return [process for process in response.json() if process["kind"] == "worker"]


@pytest.fixture
def stack(
    mongodb_url: str,
    amqp_url: str,
    namespace: str,
    db_name: str,
    jwt_secret: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Stack]:
    env = {
        **os.environ,
        "ENGINEROOM_MONGODB_URL": mongodb_url,
        "ENGINEROOM_MONGODB_DB": db_name,
        "ENGINEROOM_AMQP_URL": amqp_url,
        "ENGINEROOM_NAMESPACE": namespace,
        "ENGINEROOM_JWT_SECRET": jwt_secret,
        "PYTHONUNBUFFERED": "1",
        "ENGINEROOM_WEBHOOK_ALLOW_PRIVATE": "true",  # the webhook receiver listens on loopback
        # Each worker command would serve its metrics on 9191; tests that scrape one give it a free port.
        "ENGINEROOM_WORKER_METRICS_PORT": "0",
    }
    running = Stack(env=env, log_dir=tmp_path)
    yield running
    running.kill()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(running.logs())  # noqa: T201  (shown by pytest only for the failing test)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder is end to end (``-m "not e2e"`` leaves them out); the hook sees the whole session's
    items, so it marks only those under this folder."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _unavailable(what: str) -> NoReturn:
    """Under CI a missing tool fails the run (as in ``tests/conftest.py``); locally it skips."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} is required in CI and is not available")
    pytest.skip(f"{what} is not available")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless chromium per test module, driven by Playwright's sync API: tests that use it are plain
    functions (the sync API refuses to run inside an asyncio loop). Module scope keeps its event loop from
    outliving the module into async tests."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        _unavailable(f"chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page in a fresh context (no storage shared with other tests); what the page logged is printed when the
    test fails."""
    context = browser.new_context()
    opened = context.new_page()
    opened.set_default_timeout(PAGE_TIMEOUT_MS)
    console: list[str] = []
    opened.on("console", lambda message: console.append(f"console.{message.type}: {message.text}"))
    opened.on("pageerror", lambda error: console.append(f"page error: {error}"))
    yield opened
    context.close()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print("--- browser console ---", *console, sep="\n")  # noqa: T201  (shown by pytest for the failing test)
