"""Backpressure and recycling, decided from readings: pure, so tests inject the readings; ``read_host`` takes
real ones with psutil."""

from __future__ import annotations

from dataclasses import dataclass, field

import psutil

#: Bytes in the MiB that ``worker_max_rss_mb`` counts in.
BYTES_PER_MB = 1024 * 1024


@dataclass(frozen=True)
class Readings:
    """The host's CPU and memory use in percent, and this process's resident memory."""

    cpu_percent: float
    memory_percent: float
    rss_mb: float


@dataclass(frozen=True)
class Limits:
    """Thresholds from the settings; ``None`` means no limit."""

    max_cpu_percent: float | None = None
    max_memory_percent: float | None = None
    max_rss_mb: float | None = None


@dataclass(frozen=True)
class Verdict:
    """Whether to stop taking new jobs (and why), and whether to recycle this process."""

    pause: bool
    recycle: bool
    reasons: list[str] = field(default_factory=list)


def _over(name: str, value: float, limit: float | None, unit: str) -> str | None:
    if limit is None or value <= limit:
        return None
    return f"{name} {value:.0f}{unit} > {limit:.0f}{unit}"


def judge(readings: Readings, limits: Limits) -> Verdict:
    """Pause while the host is over a CPU or memory threshold; recycle (and pause: a process that is about to
    exit should start nothing) once this process's RSS passes its ceiling."""
    host = [
        _over("host CPU", readings.cpu_percent, limits.max_cpu_percent, "%"),
        _over("host memory", readings.memory_percent, limits.max_memory_percent, "%"),
    ]
    rss = _over("worker RSS", readings.rss_mb, limits.max_rss_mb, " MiB")
    reasons = [reason for reason in (*host, rss) if reason is not None]
    return Verdict(pause=bool(reasons), recycle=rss is not None, reasons=reasons)


class HostReader:
    """Reads the host and this process. CPU percent is over the time since the previous reading (psutil keeps
    the last sample), so one reader per process, read every heartbeat, measures each interval once."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement

    def __call__(self) -> Readings:
        return Readings(
            cpu_percent=psutil.cpu_percent(interval=None),
            memory_percent=psutil.virtual_memory().percent,
            rss_mb=self._process.memory_info().rss / BYTES_PER_MB,
        )
