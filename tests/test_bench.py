"""The benchmarks stay runnable: each one's entry point loads and describes its options (no timed assertions)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["all", "burst", "latency", "batch", "delayed", "ws", "soak"])
def test_each_benchmark_loads_and_answers_help(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", name, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert "usage: python -m bench" in result.stdout


def test_the_websocket_benchmark_names_its_client_and_rate_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "ws", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    for option in ("--clients", "--users", "--rate", "--duration-s", "--client-processes"):
        assert option in result.stdout


def test_plain_python_m_bench_is_the_whole_suite() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert "usage: python -m bench all" in result.stdout
    for option in ("--repeat", "--quick", "--full", "--only"):
        assert option in result.stdout


def test_the_burst_benchmark_offers_batch_submits() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "burst", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert "--batch-size" in result.stdout
