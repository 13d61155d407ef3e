"""The benchmarks stay runnable: each one's entry point loads and describes its options, and the throughput, floor
and backlog ones run small against real processes (no timed assertions: their figures are only checked to exist)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import latency

ROOT = Path(__file__).resolve().parent.parent
#: Seconds a small benchmark run may take on a busy 2-core machine (each starts SecantusDB, an API, workers).
SMOKE_TIMEOUT_S = 600


def run_bench(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *argv], cwd=ROOT, capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S
    )


@pytest.fixture
def secantusd() -> None:
    """The benchmarks start their own ``secantusd-py``: under CI its absence fails, locally it skips."""
    if shutil.which("secantusd-py") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("secantusd-py is required in CI and is not on PATH")
        pytest.skip("secantusd-py is not on PATH")


def help_of(*argv: str) -> str:
    """What ``python -m bench *argv --help`` prints, run in this process (a process of its own per benchmark cost a
    second each); ``test_plain_python_m_bench_is_the_whole_suite`` runs the command itself."""
    printed = io.StringIO()
    with (
        pytest.MonkeyPatch.context() as patch,
        contextlib.redirect_stdout(printed),
        pytest.raises(SystemExit) as exited,
    ):
        patch.setattr(sys, "argv", ["bench", *argv, "--help"])
        runpy.run_module("bench", run_name="__main__")
    assert exited.value.code == 0
    return printed.getvalue()


def summary_of(output: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(output.read_text())["summary"]
    return summary


@pytest.mark.parametrize(
    "name", ["all", "burst", "floor", "backlog", "latency", "batch", "delayed", "ws", "artifacts", "soak"]
)
def test_each_benchmark_loads_and_answers_help(name: str) -> None:
    assert f"usage: python -m bench {name}" in help_of(name)


def test_the_websocket_benchmark_names_its_client_and_rate_options() -> None:
    printed = help_of("ws")

    for option in ("--clients", "--users", "--rate", "--duration-s", "--client-processes"):
        assert option in printed


def test_plain_python_m_bench_is_the_whole_suite() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert "usage: python -m bench all" in result.stdout
    for option in ("--repeat", "--quick", "--full", "--only", "--backlog-cap-s"):
        assert option in result.stdout
    for name in ("floor", "backlog"):
        assert name in result.stdout


def test_the_burst_benchmark_offers_batch_submits() -> None:
    assert "--batch-size" in help_of("burst")


def test_the_backlog_benchmark_offers_a_cap_windows_and_a_job_count() -> None:
    printed = help_of("backlog")

    for option in ("--jobs", "--batch-size", "--window", "--time-cap-s", "--no-floor", "--repeat"):
        assert option in printed


@pytest.mark.e2e
@pytest.mark.loads_cores
@pytest.mark.timeout(SMOKE_TIMEOUT_S + 60)
def test_a_small_throughput_run_reports_the_floor_round_trips_and_database_cpu_per_job(
    amqp_url: str, secantusd: None, tmp_path: Path
) -> None:
    # Given a small burst of batch submits with the floor baseline
    output = tmp_path / "burst.json"

    # When it runs
    result = run_bench(
        "burst", "--jobs", "60", "--batch-size", "30", "--concurrency", "2", "--repeat", "1",
        "--amqp-url", amqp_url, "--output", str(output),
    )  # fmt: skip

    # Then engineroom, the floor and raw Dramatiq each have figures, and so do the costs per job
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = summary_of(output)
    for figure in ("engineroom end-to-end jobs/s", "floor jobs/s", "raw dramatiq msgs/s"):
        assert summary[figure]["median"] > 0, figure
    for side in ("engineroom", "floor"):
        assert summary[f"{side} db requests/job"]["median"] > 0
        assert f"{side} cpu ms/job secantusd" in summary
    assert "ratio engineroom/floor (jobs/s)" in summary


@pytest.mark.e2e
@pytest.mark.loads_cores
@pytest.mark.timeout(SMOKE_TIMEOUT_S + 60)
def test_the_suite_runs_the_floor_and_a_backlog_of_a_few_hundred_jobs_at_the_default_limit(
    amqp_url: str, secantusd: None, tmp_path: Path
) -> None:
    # Given the suite's quick sizes: a 150-job backlog with windows of 50, a 200-job floor
    output = tmp_path / "suite.json"

    # When only those two run, once, the backlog capped
    result = run_bench(
        "all", "--quick", "--only", "floor", "backlog", "--repeat", "1", "--backlog-cap-s", "300",
        "--amqp-url", amqp_url, "--output", str(output),
    )  # fmt: skip

    # Then both report without failing, the backlog ran behind general's default limit and has its windows
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(output.read_text())
    backlog = report["benchmarks"]["backlog"]
    assert backlog["summary"]["engineroom queue max_concurrency"]["median"] == 2
    (sample,) = backlog["engineroom"]
    assert sample["completed"] > 0
    assert set(sample["window_rates"]) <= {"first", "middle", "last"}
    assert "engineroom db requests/job" in backlog["summary"]
    assert "floor jobs/s" in backlog["summary"]
    figures = [line["figure"] for line in report["figures"]]
    assert any("window spread" in figure for figure in figures)
    assert any(figure.startswith("floor jobs/s") for figure in figures)


@pytest.mark.timeout(SMOKE_TIMEOUT_S + 60)
def test_a_small_artifact_run_reports_write_and_read_speeds_beside_the_drivers_gridfs(
    secantusd: None, tmp_path: Path
) -> None:
    output = tmp_path / "artifacts.json"

    result = run_bench("artifacts", "--size-mb", "4", "--repeat", "1", "--output", str(output))

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = summary_of(output)
    for side in ("engineroom", "raw"):
        for what in ("write", "read"):
            assert summary[f"{side} {what} MB/s"]["median"] > 0
        assert summary[f"{side} write peak Python MB"]["median"] > 0


def latency_result(rate: float, p50_ms: float, p99_ms: float) -> dict[str, Any]:
    """A latency benchmark's result as ``bench.latency.run`` returns it, with only what ``comparisons`` reads."""

    def figure(value: float) -> dict[str, float]:
        return {"median": value, "min": value, "max": value}

    return {
        "config": {"rate": rate},
        "summary": {
            "engineroom submit->job.started seen of counted": figure(1.0),
            "engineroom submit->job.started p50 ms": figure(p50_ms),
            "engineroom submit->job.started p99 ms": figure(p99_ms),
            "raw enqueue->actor start p50 ms": figure(1.4),
            "raw enqueue->actor start p99 ms": figure(2.2),
        },
    }


def test_the_latency_lines_add_the_hot_path_issues_targets_at_its_rate() -> None:
    at_issue_rate = {line.figure: line.met for line in latency.comparisons(latency_result(20, 12.0, 70.0))}
    at_other_rate = [line.figure for line in latency.comparisons(latency_result(50, 12.0, 70.0))]

    assert at_issue_rate == {
        "latency submit->job.started p50 ms (at 20/s)": False,
        "latency submit->job.started p99 ms (at 20/s)": False,
        "latency submit->job.started p50 ms (at 20/s) (hot-path issue)": True,
        "latency submit->job.started p99 ms (at 20/s) (hot-path issue)": False,
    }
    assert at_other_rate == [
        "latency submit->job.started p50 ms (at 50/s)",
        "latency submit->job.started p99 ms (at 50/s)",
    ]
