"""``engineroom worker`` points the metrics files at a directory of its own, and leaves no trace of it behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engineroom.actors.worker_metrics import worker_metrics_environment
from engineroom.core.config import Settings


def test_the_metrics_directory_and_its_variables_last_as_long_as_the_command(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv("dramatiq_prom_port", "9999")
    with worker_metrics_environment(settings.model_copy(update={"worker_metrics_port": 9191})) as directory:
        assert directory is not None and Path(directory).is_dir()
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == directory
        assert os.environ["dramatiq_prom_port"] == "9191"
    # A process started afterwards (tests run the command in process) must not inherit the removed directory
    assert not Path(directory).exists()
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    assert os.environ["dramatiq_prom_port"] == "9999"
