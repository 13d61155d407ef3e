"""The one small interface every artifact store implements: write a file in chunks, read a byte range of it, delete
a job's files, and list the jobs that have some (to sweep those whose job is gone)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

# Bytes read or written per chunk: what a save or a download holds in memory at a time (a few of these). It is the
# GridFS chunk size, so the store that writes GridFS owns it.
from engineroom.store.artifact_files import CHUNK_BYTES as CHUNK_BYTES


class ArtifactWriter(Protocol):
    """One file being written; nothing is visible to readers before ``commit``."""

    async def write(self, chunk: bytes) -> None: ...

    async def commit(self) -> None:
        """Make the file readable under its name, replacing a file saved earlier under it."""

    async def abort(self) -> None:
        """Drop what was written (a failed or cancelled save)."""


@runtime_checkable
class ArtifactStore(Protocol):
    """Where artifact bytes live; what they are (size, type, hash) is recorded on the job document."""

    async def prepare(self) -> None:
        """Create what the store's queries need (indexes, a bucket check); safe to run at every start."""

    async def open_writer(self, job_id: str, name: str, content_type: str) -> ArtifactWriter: ...

    def open_reader(self, job_id: str, name: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``start`` up to (not including) ``end`` of the file, in chunks.

        Raises:
          NotFound: no such file (when iterated).
        """
        ...

    async def delete_job(self, job_id: str) -> None:
        """Delete every file of the job (nothing if it has none)."""

    async def job_ids(self) -> list[str]:
        """The jobs that have files here."""
        ...

    async def close(self) -> None: ...
