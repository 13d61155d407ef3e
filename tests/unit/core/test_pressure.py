"""Backpressure and recycling decisions from injected readings."""

from __future__ import annotations

from engineroom.core.pressure import HostReader, Limits, Readings, judge

CALM = Readings(cpu_percent=20, memory_percent=40, rss_mb=100)


def test_no_limits_never_pause() -> None:
    verdict = judge(Readings(cpu_percent=100, memory_percent=100, rss_mb=10_000), Limits())
    assert not verdict.pause and not verdict.recycle and verdict.reasons == []


def test_a_busy_host_pauses_without_recycling() -> None:
    limits = Limits(max_cpu_percent=80, max_memory_percent=90)
    verdict = judge(Readings(cpu_percent=95, memory_percent=40, rss_mb=100), limits)
    assert verdict.pause and not verdict.recycle
    assert verdict.reasons == ["host CPU 95% > 80%"]
    verdict = judge(Readings(cpu_percent=95, memory_percent=93, rss_mb=100), limits)
    assert verdict.reasons == ["host CPU 95% > 80%", "host memory 93% > 90%"]


def test_readings_at_the_threshold_do_not_pause() -> None:
    assert not judge(Readings(cpu_percent=80, memory_percent=90, rss_mb=512), Limits(80, 90, 512)).pause
    assert not judge(CALM, Limits(80, 90, 512)).pause


def test_passing_the_rss_ceiling_recycles_and_pauses() -> None:
    verdict = judge(Readings(cpu_percent=10, memory_percent=10, rss_mb=700), Limits(max_rss_mb=512))
    assert verdict.recycle and verdict.pause
    assert verdict.reasons == ["worker RSS 700 MiB > 512 MiB"]


def test_the_host_reader_reads_plausible_values() -> None:
    readings = HostReader()()
    assert 0 <= readings.cpu_percent <= 100
    assert 0 < readings.memory_percent <= 100
    assert readings.rss_mb > 1
