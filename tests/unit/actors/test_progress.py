"""Progress: every report is an event, writes are coalesced, bad reports are the task author's error."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from engineroom.actors.progress import ProgressCoalescer
from engineroom.models.job import JobDocument, JobState, Progress
from engineroom.services.context import InvalidProgress, JobContext


def test_writes_are_coalesced_but_the_latest_report_is_kept() -> None:
    coalescer = ProgressCoalescer(min_interval_s=60)
    assert coalescer.offer("job", Progress(percent=1)) is True
    assert coalescer.offer("job", Progress(percent=2)) is False
    assert coalescer.offer("other", Progress(percent=5)) is True
    assert coalescer.pop_latest("job") == Progress(percent=2)
    assert coalescer.pop_latest("job") is None


class _Reporter:
    def __init__(self) -> None:
        self.reports: list[Progress] = []

    def report_progress(self, job: JobDocument, progress: Progress) -> None:
        self.reports.append(progress)

    def is_cancelled(self, job: JobDocument) -> bool:
        return False


def _context() -> tuple[JobContext, _Reporter]:
    job = JobDocument(
        id="01",
        tenant_id="t",
        user_id="u",
        engine="general",
        task="general.demo",
        state=JobState.RUNNING,
        created_at=datetime.now(UTC),
    )
    reporter = _Reporter()
    return JobContext(job, reporter), reporter


@pytest.mark.parametrize("percent", [-1, 100.5, float("nan"), "50", True, None])
def test_progress_outside_0_to_100_is_a_clear_error(percent: Any) -> None:
    ctx, reporter = _context()
    with pytest.raises(InvalidProgress, match="0 to 100"):
        ctx.progress(percent)
    assert reporter.reports == []


def test_progress_details_must_be_json_values() -> None:
    ctx, _ = _context()
    with pytest.raises(InvalidProgress, match="JSON"):
        ctx.progress(10, "x", handle=object())


def test_usage_adds_up() -> None:
    ctx, _ = _context()
    ctx.record_usage(tokens_in=10, cost_usd=0.5)
    ctx.record_usage(tokens_in=5, tokens_out=3, cost_usd=0.25)
    assert ctx.usage.model_dump() == {"tokens_in": 15, "tokens_out": 3, "cost_usd": 0.75}


def test_a_job_that_just_started_writes_no_progress_in_its_first_interval() -> None:
    coalescer = ProgressCoalescer(min_interval_s=60)
    coalescer.start("job")
    assert coalescer.offer("job", Progress(percent=50)) is False
    assert coalescer.pop_latest("job") == Progress(percent=50)
