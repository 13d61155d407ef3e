"""``JobContext``: what a running task may ask of engineroom (progress, cancellation, usage)."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from pydantic import ValidationError

from engineroom.core.errors import PermanentError
from engineroom.models.job import JobDocument, Progress, Usage


class InvalidProgress(PermanentError, ValueError):
    """A task reported progress engineroom cannot store: a bug in the task, so the job fails without retries."""


class JobReporter(Protocol):
    """Where a context sends what the task reports; implemented by the runner."""

    def report_progress(self, job: JobDocument, progress: Progress) -> None: ...

    def is_cancelled(self, job: JobDocument) -> bool: ...


class JobContext:
    """Handed to every task as its first argument."""

    def __init__(self, job: JobDocument, reporter: JobReporter, inputs: dict[str, Any] | None = None) -> None:
        self.job = job
        self.inputs = inputs or {}
        self.usage = Usage()
        self.log = logging.LoggerAdapter(logging.getLogger(f"engineroom.task.{job.task}"), {"job_id": job.id})
        self._reporter = reporter

    @property
    def job_id(self) -> str:
        return self.job.id

    def progress(self, percent: float, message: str | None = None, **details: Any) -> None:
        """Record progress and tell the job's watchers.

        Raises:
          InvalidProgress: ``percent`` is not a number from 0 to 100, or ``details`` are not JSON values.
        """
        if isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 <= percent <= 100:
            raise InvalidProgress(f"ctx.progress: percent must be a number from 0 to 100, not {percent!r}")
        try:
            progress = Progress(percent=percent, message=message, details=details)
        except ValidationError as exc:
            raise InvalidProgress(f"ctx.progress: message and details must be JSON values: {exc}") from None
        self._reporter.report_progress(self.job, progress)

    def raise_if_cancelled(self) -> None:
        """Stop here if the job was cancelled (cooperative check for long loops)."""
        from engineroom.core.errors import JobCancelled

        if self._reporter.is_cancelled(self.job):
            raise JobCancelled(f"job {self.job.id} was cancelled")

    def record_usage(self, *, tokens_in: int = 0, tokens_out: int = 0, cost_usd: float = 0.0) -> None:
        """Add to the job's usage; stored when the job finishes."""
        self.usage = Usage(
            tokens_in=self.usage.tokens_in + tokens_in,
            tokens_out=self.usage.tokens_out + tokens_out,
            cost_usd=self.usage.cost_usd + cost_usd,
        )
