"""``engineroom worker --autoscale`` against real processes: a backlog of slow jobs takes the engine from one worker
process to more and, once drained, back to one, with every job run exactly once. The timeline it records (time,
backlog, processes) is printed and written to ``autoscale_timeline.tsv`` under the test's directory."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

TokenFor = Callable[..., str]
#: Seconds since the supervisor started, ready backlog, processes taking jobs, processes draining.
Sample = tuple[float, int, int, int]
#: Fast scheduler and heartbeats, and an autoscaler that reacts within seconds instead of minutes.
FAST = {
    "ENGINEROOM_SCHEDULER_INTERVAL_S": "0.1",
    "ENGINEROOM_JOB_LEASE_S": "3",
    "ENGINEROOM_AUTOSCALE_BACKLOG_PER_PROCESS": "4",
    "ENGINEROOM_AUTOSCALE_SUSTAIN_S": "1",
    "ENGINEROOM_AUTOSCALE_COOLDOWN_S": "2",
    "ENGINEROOM_AUTOSCALE_INTERVAL_S": "0.25",
}
#: Jobs of a second each: one process of two threads alone needs 10 s for them, the backlog stays over
#: ``AUTOSCALE_BACKLOG_PER_PROCESS`` for most of that, and a scale-up needs it for ``AUTOSCALE_SUSTAIN_S``.
JOBS = 20
#: Seconds the whole scale-up, drain and scale-down may take (one process alone needs 10 s for the jobs).
DEADLINE_S = 120.0
#: Seconds between two samples of the timeline.
SAMPLE_S = 0.25


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def scaling_decisions(log_path: Path) -> list[str]:
    """The supervisor's scale-up and scale-down lines (JSON log lines: their time and message)."""
    decisions = []
    for line in log_path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and str(record.get("message", "")).startswith(("scale up", "scale down")):
            decisions.append(f"{record['ts']} {record['message']}")
    return decisions


class Timeline:
    """Samples the supervisor's document (see ``Sample``) in a thread of its own, so the record has no gap while
    the test submits or waits; also keeps every worker pid it saw listed."""

    def __init__(self, base_url: str, admin: str) -> None:
        self.base_url, self.admin = base_url, admin
        self.started = time.monotonic()
        self.samples: list[Sample] = []
        self.worker_pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            try:
                response = httpx.get(f"{self.base_url}/workers", headers=auth(self.admin), timeout=5)
            except httpx.TransportError:
                continue
            processes = response.json() if response.status_code == 200 else []
            self.worker_pids.update(process["pid"] for process in processes if process["kind"] == "worker")
            for process in processes:
                if process["kind"] == "supervisor":
                    scale = process["autoscale"]
                    at_s = round(time.monotonic() - self.started, 2)
                    self.samples.append((at_s, scale["backlog"], scale["processes"], scale["draining"]))

    def wait_for(self, condition: Callable[[list[Sample]], bool], what: str) -> None:
        deadline = self.started + DEADLINE_S
        while not condition(list(self.samples)):
            assert time.monotonic() < deadline, f"timed out waiting for {what}; timeline: {self.samples}"
            time.sleep(SAMPLE_S)

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join(timeout=10)
        return list(self.samples)


def scaled_up_then_back_to_one(samples: list[Sample]) -> bool:
    peak = max((processes for _, _, processes, _ in samples), default=0)
    return peak >= 2 and samples[-1][1:] == (0, 1, 0)


@pytest.mark.timeout(DEADLINE_S + 60)
def test_a_backlog_of_slow_jobs_scales_one_engine_up_and_back_down(
    stack: Stack, token_for: TokenFor, tmp_path: Path
) -> None:
    # Given a gateway, a scheduler and an autoscaling worker command for the general engine, at one process
    stack.env.update(FAST)
    base_url = stack.start_api()
    stack.start_scheduler()
    admin = token_for("root", "acme", admin=True)
    supervisor = stack.start(
        "worker",
        *("worker", "--autoscale", "1:3", "--engines", "general", "--threads", "2", "--no-notifications"),
        new_session=True,
    )
    timeline = Timeline(base_url, admin)
    timeline.wait_for(lambda samples: bool(samples) and samples[-1][2] == 1, "one worker process")
    # And a cluster-wide limit high enough that more processes can run more jobs at once
    limits = httpx.put(f"{base_url}/queues/general/limits", json={"max_concurrency": 20}, headers=auth(admin))
    assert limits.status_code == 200, limits.text

    # When 20 jobs of a second each arrive at once
    body = {"jobs": [{"task": "general.demo", "payload": {"duration_s": 1.0, "steps": 2}} for _ in range(JOBS)]}
    submitted = httpx.post(f"{base_url}/jobs/batch", json=body, headers=auth(admin), timeout=30)
    assert submitted.status_code == 202, submitted.text
    ids = submitted.json()["ids"]
    timeline.wait_for(scaled_up_then_back_to_one, "a scale-up and the way back to one process")
    samples = timeline.stop()

    # Then the timeline shows the engine at 1 process, then at 2 or more, then at 1 again
    lines = ["t_s\tbacklog\tprocesses\tdraining", *("{:.2f}\t{}\t{}\t{}".format(*sample) for sample in samples)]
    decisions = scaling_decisions(supervisor.log_path)
    report = "\n".join([*lines, "", *decisions])
    (tmp_path / "autoscale_timeline.tsv").write_text(report + "\n")
    print(f"\n--- autoscale timeline ---\n{report}")  # noqa: T201  (the issue note quotes it)
    assert max(processes for _, _, processes, _ in samples) >= 2 and samples[-1][2] == 1
    assert any("scale up general 1→2: backlog" in line for line in decisions), decisions
    assert any("scale down general 2→1" in line for line in decisions), decisions

    # And every job completed exactly once: one attempt, one running → completed
    for job_id in ids:
        job = httpx.get(f"{base_url}/jobs/{job_id}", headers=auth(admin), timeout=5).json()
        states = [entry["state"] for entry in job["history"]]
        assert job["state"] == "completed" and job["attempts"] == 1, (
            job_id,
            job["attempts"],
            json.dumps(job["history"], indent=0),
        )
        assert states.count("running") == 1 and states[states.index("running") + 1] == "completed", states

    # When the supervisor is told to stop, it drains its children and exits cleanly, leaving none behind
    assert len(timeline.worker_pids) >= 2
    supervisor.popen.send_signal(signal.SIGTERM)
    assert supervisor.popen.wait(timeout=30) == 0
    assert not [pid for pid in timeline.worker_pids if is_running(pid)]


def test_a_supervisor_killed_outright_takes_its_worker_processes_down_with_it(stack: Stack) -> None:
    import psutil

    # Given an autoscaling worker command with its one worker process up
    stack.env.update(FAST)
    supervisor = stack.start("worker", "worker", "--autoscale", "1:2", "--engines", "general", "--no-notifications")
    deadline = time.monotonic() + 60
    while len(workers := psutil.Process(supervisor.popen.pid).children(recursive=True)) < 2:
        assert time.monotonic() < deadline, "the supervisor's worker command and its process did not start"
        time.sleep(0.2)
    # When the supervisor is SIGKILLed, so that it cannot forward anything
    supervisor.popen.kill()
    supervisor.popen.wait(timeout=10)
    # Then its worker command and that command's worker process stop by themselves
    _, alive = psutil.wait_procs(workers, timeout=30)
    for orphan in alive:  # the stack's teardown finds processes through the supervisor, which is gone
        orphan.kill()
    assert not alive, [process.pid for process in alive]
