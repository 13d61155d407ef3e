"""``engineroom dev`` from a clean directory: embedded database, workers and gateway in one command."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.ports import free_port

#: Seconds ``engineroom dev`` gets to print its token (it starts a database first).
DEV_START_TIMEOUT_S = 60.0


class DevProcess:
    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log_path = cwd / "dev.log"
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "engineroom.cli", "dev", "--port", str(self.port)],
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.base_url = f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_token(self) -> str:
        deadline = time.monotonic() + DEV_START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.popen.poll() is None, self.log()
            found = re.search(r"admin token \(tenant 'default'\): (\S+)", self.log())
            if found:
                return found.group(1)
            time.sleep(0.2)
        raise AssertionError(f"no token printed:\n{self.log()}")

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + DEV_START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError(f"dev server never answered:\n{self.log()}")

    def interrupt(self, signum: int = signal.SIGINT) -> int:
        """Ctrl-C (or ``signum``), as a user or a process manager would; returns the exit code."""
        self.popen.send_signal(signum)
        try:
            return self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            raise AssertionError(f"dev did not stop on Ctrl-C:\n{self.log()}") from None


@pytest.fixture
def dev_env(namespace: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ENGINEROOM_")}
    return {**env, "ENGINEROOM_NAMESPACE": namespace, "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def dev(tmp_path: Path, dev_env: dict[str, str], request: pytest.FixtureRequest) -> Iterator[DevProcess]:
    amqp_override = getattr(request, "param", None)
    env = dev_env if amqp_override is None else {**dev_env, "ENGINEROOM_AMQP_URL": amqp_override}
    process = DevProcess(tmp_path, env)
    yield process
    if process.popen.poll() is None:
        process.interrupt()  # Ctrl-C, so the embedded database stops too


async def run_one_job(base_url: str, token: str) -> dict[str, object]:
    async with websockets.connect(base_url.replace("http", "ws") + f"/ws?token={token}") as socket:
        assert json.loads(await socket.recv())["type"] == "hello"
        async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {token}"}) as http:
            body = {"task": "text_intelligence.demo", "payload": {"duration_s": 0.2, "steps": 2, "result": 42}}
            submitted = await http.post("/jobs", json=body)
            assert submitted.status_code == 202, submitted.text
            while True:
                event = json.loads(await asyncio.wait_for(socket.recv(), 20))
                if event["type"] == "job.completed":
                    break
            job: dict[str, object] = (await http.get(f"/jobs/{submitted.json()['id']}")).json()
            return job


def secantus_processes_under(path: Path) -> list[str]:
    listing = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in listing.splitlines() if "secantusd" in line and str(path) in line]


async def test_dev_serves_a_job_end_to_end_from_a_clean_directory_and_stops_on_ctrl_c(
    dev: DevProcess, tmp_path: Path, amqp_url: str
) -> None:
    token = dev.wait_for_token()
    dev.wait_until_serving()
    assert f"http://127.0.0.1:{dev.port}/docs" in dev.log()
    assert "IN-PROCESS broker" not in dev.log()
    job = await run_one_job(dev.base_url, token)
    assert job["state"] == "completed"
    assert (tmp_path / ".engineroom" / "mongo").is_dir()
    assert secantus_processes_under(tmp_path)
    assert dev.interrupt() == 0
    assert not secantus_processes_under(tmp_path)


# The id is fixed: xdist workers each pick their own port, and must collect tests of the same names.
@pytest.mark.parametrize(
    "dev", [pytest.param(f"amqp://guest:guest@127.0.0.1:{free_port()}/", id="nothing-listening")], indirect=True
)
async def test_dev_without_rabbitmq_warns_loudly_and_still_runs_jobs(dev: DevProcess) -> None:
    token = dev.wait_for_token()
    dev.wait_until_serving()
    assert "IN-PROCESS broker" in dev.log()
    job = await run_one_job(dev.base_url, token)
    assert job["state"] == "completed" and job["result"] == {"engine": "text_intelligence", "steps": 2, "result": 42}
    assert dev.interrupt() == 0


async def test_dev_stops_its_database_on_sigterm_too(dev: DevProcess, tmp_path: Path) -> None:
    dev.wait_for_token()
    dev.wait_until_serving()
    assert secantus_processes_under(tmp_path)
    assert dev.interrupt(signal.SIGTERM) == 0
    assert not secantus_processes_under(tmp_path)
