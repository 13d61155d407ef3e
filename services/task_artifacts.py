"""A running job's artifacts, for its ``JobContext``: save files into the artifact store chunk by chunk (each chunk
one call on the worker's event loop, so a save holds a chunk or two in memory, never the file), record them on the
job, tell its watchers; and read the files of the jobs it depends on."""

from __future__ import annotations

import io
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from dramatiq.middleware import Interrupt
from pydantic_core import to_jsonable_python

from engineroom.artifacts.base import ArtifactWriter
from engineroom.artifacts.saving import (
    ArtifactSource,
    ByteLimit,
    InvalidArtifact,
    guess_content_type,
    iter_chunks,
    stream_into,
)
from engineroom.core.clock import utcnow
from engineroom.core.config import Settings
from engineroom.core.errors import EngineroomError
from engineroom.models.artifact import ArtifactRecord, check_artifact_name
from engineroom.models.event import EventType
from engineroom.models.job import JobDocument

if TYPE_CHECKING:
    from engineroom.artifacts.base import ArtifactStore
    from engineroom.store.jobs import JobStore

logger = logging.getLogger(__name__)

T = TypeVar("T")


class WorkerStores(Protocol):
    """The stores of a worker process that a task's artifacts use (the runner's ``WorkerStores`` has them)."""

    @property
    def jobs(self) -> JobStore: ...

    @property
    def artifacts(self) -> ArtifactStore: ...


class ArtifactHost(Protocol):
    """What ``TaskArtifacts`` needs of the runner."""

    settings: Settings

    def call_stores(self, operation: Callable[[WorkerStores], Awaitable[T]]) -> T: ...

    def publish(
        self, job: JobDocument, event_type: EventType, data: dict[str, Any] | None = None, *, wait: bool = True
    ) -> None: ...


class TaskArtifacts:
    """The artifacts of one attempt of one job."""

    def __init__(self, host: ArtifactHost, job: JobDocument) -> None:
        self._host = host
        self._job = job
        #: What the job holds, by name: earlier attempts' files, then this one's.
        self.records: dict[str, ArtifactRecord] = {record.name: record for record in job.artifacts}

    def save(self, name: str, source: ArtifactSource, content_type: str | None) -> ArtifactRecord:
        """Stream ``source`` into the store as ``name``, record it on the job, announce ``job.artifact``.

        Raises:
          InvalidArtifact: a bad name or source.
          ArtifactTooLarge: over the per-artifact or per-job limit (nothing is kept).
        """
        try:
            check_artifact_name(name)
        except ValueError as exc:
            raise InvalidArtifact(f"ctx.save_artifact: {exc}") from None
        content_type = guess_content_type(name, content_type)
        writer = self._call(lambda stores: stores.artifacts.open_writer(self._job.id, name, content_type))
        try:
            written = stream_into(
                iter_chunks(source), lambda chunk: self._write(writer, chunk), name=name, limit=self._limit(name)
            )
            self._call(lambda stores: writer.commit())
        except (Exception, Interrupt):
            self._abort(writer)
            raise
        record = ArtifactRecord(
            name=name,
            size_bytes=written.size_bytes,
            content_type=content_type,
            sha256=written.sha256,
            created_at=utcnow(),
            attempt=self._job.attempts,
        )
        self._call(lambda stores: stores.jobs.record_artifact(self._job.id, record))
        self.records[name] = record
        self._host.publish(self._job, EventType.JOB_ARTIFACT, to_jsonable_python(record.model_dump()), wait=False)
        return record

    def of_dependency(self, dependency: str) -> tuple[str, list[ArtifactRecord]]:
        """The id and artifacts of the job this one depends on named ``dependency`` (its step id in a workflow,
        or its job id).

        Raises:
          InvalidArtifact: this job does not depend on such a job.
        """
        jobs = self._call(lambda stores: stores.jobs.outcomes(self._job.depends_on))
        for job in jobs:
            if dependency in (job.id, job.step_id):
                return job.id, job.artifacts
        raise InvalidArtifact(f"this job does not depend on {dependency!r}; it depends on {self._job.depends_on}")

    def open_of_dependency(self, dependency: str, name: str) -> io.BufferedReader:
        """A binary file object reading artifact ``name`` of a dependency, chunk by chunk from the store."""
        job_id, records = self.of_dependency(dependency)
        record = next((record for record in records if record.name == name), None)
        if record is None:
            raise InvalidArtifact(f"{dependency!r} saved no artifact named {name!r}")
        chunks = self._read(job_id, name, record.size_bytes)
        return io.BufferedReader(_ChunkStream(chunks))

    def _read(self, job_id: str, name: str, size_bytes: int) -> Iterator[bytes]:
        state: dict[str, Any] = {}

        async def next_chunk(stores: WorkerStores) -> bytes | None:
            if "reader" not in state:
                state["reader"] = stores.artifacts.open_reader(job_id, name, 0, size_bytes)
            return await anext(state["reader"], None)

        while (chunk := self._call(next_chunk)) is not None:
            yield chunk

    def _limit(self, name: str) -> ByteLimit:
        settings = self._host.settings
        others = sum(record.size_bytes for record in self.records.values() if record.name != name)
        return ByteLimit(
            settings.max_artifact_bytes, settings.max_job_artifacts_bytes - others, settings.max_job_artifacts_bytes
        )

    def _write(self, writer: ArtifactWriter, chunk: bytes) -> None:
        self._call(lambda stores: writer.write(chunk))

    def _abort(self, writer: ArtifactWriter) -> None:
        try:
            self._call(lambda stores: writer.abort())
        except (EngineroomError, Interrupt):
            logger.warning(
                "an aborted artifact of job %s left parts behind; the sweep removes them with the job", self._job.id
            )

    def _call(self, operation: Callable[[WorkerStores], Awaitable[T]]) -> T:
        return self._host.call_stores(operation)


class _ChunkStream(io.RawIOBase):
    """A read-only raw stream over an iterator of chunks (``io.BufferedReader`` on top gives ``read(n)`` etc.)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._pending:
            self._pending = next(self._chunks, b"")
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size
