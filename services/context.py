"""``JobContext``: what a running task may ask of engineroom (progress, cancellation, usage)."""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from engineroom.core.errors import PermanentError
from engineroom.models.job import JobDocument, Progress, Usage

if TYPE_CHECKING:
    from engineroom.artifacts.saving import ArtifactSource
    from engineroom.models.artifact import ArtifactRecord
    from engineroom.services.task_artifacts import TaskArtifacts


class InvalidProgress(PermanentError, ValueError):
    """A task reported progress engineroom cannot store: a bug in the task, so the job fails without retries."""


class JobReporter(Protocol):
    """Where a context sends what the task reports; implemented by the runner."""

    def report_progress(self, job: JobDocument, progress: Progress) -> None: ...

    def is_cancelled(self, job: JobDocument) -> bool: ...


class JobContext:
    """Handed to every task as its first argument."""

    def __init__(
        self,
        job: JobDocument,
        reporter: JobReporter,
        inputs: dict[str, Any] | None = None,
        artifacts: TaskArtifacts | None = None,
    ) -> None:
        self.job = job
        self.inputs = inputs or {}
        self._artifacts = artifacts
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

    def save_artifact(self, name: str, data: ArtifactSource, content_type: str | None = None) -> ArtifactRecord:
        """Save a file the task made (an image, a clip, a report) under ``name``, and tell the job's watchers.

        ``data`` is the bytes, a file's path, or a binary file object; it is streamed into the artifact store in
        chunks, never held whole. ``content_type`` defaults to what the name's extension says. Saving a name again
        replaces the file. Returns what was recorded (size, type, sha256, attempt).

        Raises:
          InvalidArtifact: a bad name (a plain file name: letters, digits, ``._-``) or ``data`` of another kind.
          ArtifactTooLarge: over ``ENGINEROOM_MAX_ARTIFACT_BYTES`` or the job's ``ENGINEROOM_MAX_JOB_ARTIFACTS_BYTES``;
            the job fails without retries.
        """
        return self._require_artifacts().save(name, data, content_type)

    def input_artifacts(self, dependency: str) -> list[ArtifactRecord]:
        """The artifacts of a job this one depends on: a workflow step's id (as in ``ctx.inputs``) or a job id."""
        return self._require_artifacts().of_dependency(dependency)[1]

    def open_input_artifact(self, dependency: str, name: str) -> io.BufferedReader:
        """Read artifact ``name`` of the dependency ``dependency`` as a binary file (streamed from the store)."""
        return self._require_artifacts().open_of_dependency(dependency, name)

    def _require_artifacts(self) -> TaskArtifacts:
        if self._artifacts is None:
            raise RuntimeError("this JobContext was built without an artifact store (a test double?)")
        return self._artifacts
