"""The task side of a save: turn what a task hands ``ctx.save_artifact`` (bytes, a path, a file object) into chunks,
hash and count them, and stop at the size limit. Runs on the worker thread; nothing here holds a whole file."""

from __future__ import annotations

import hashlib
import io
import mimetypes
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Union

from engineroom.artifacts.base import CHUNK_BYTES
from engineroom.core.errors import PermanentError


class BinaryReadable(Protocol):
    """A binary file object, or anything with its ``read``: a pipe from an encoder, a socket's file, a generator's
    wrapper."""

    def read(self, size: int = -1, /) -> bytes: ...


#: A media type with optional parameters, printable ASCII only (``video/mp4``, ``text/plain; charset=utf-8``).
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][\w.+-]*/[\w.+-]+(\s*;[ -~]*)?$")

#: What ``ctx.save_artifact`` accepts: the bytes themselves, a file's path, or a binary file object.
ArtifactSource = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", BinaryReadable]


class InvalidArtifact(PermanentError, ValueError):
    """A task saved something engineroom cannot store (a bad name, text instead of bytes): a bug in the task."""


class ArtifactTooLarge(PermanentError):
    """A save passed the per-artifact or per-job size limit; the job fails without retries."""


@dataclass(frozen=True)
class Written:
    size_bytes: int
    sha256: str


def guess_content_type(name: str, content_type: str | None) -> str:
    """``content_type`` if given, else what the name's extension says, else ``application/octet-stream``.

    Raises:
      InvalidArtifact: ``content_type`` is not a media type (it becomes a response header of every download).
    """
    if content_type is None:
        return mimetypes.guess_type(name)[0] or "application/octet-stream"
    if not isinstance(content_type, str) or not _MEDIA_TYPE.fullmatch(content_type):
        raise InvalidArtifact(f"ctx.save_artifact: {content_type!r} is not a media type like 'image/png'")
    return content_type


def iter_chunks(source: ArtifactSource) -> Iterator[bytes]:
    """The content of ``source`` in chunks of ``CHUNK_BYTES``.

    Raises:
      InvalidArtifact: ``source`` is none of the accepted kinds, or a file object yields text.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source).cast("B")
        for offset in range(0, len(view), CHUNK_BYTES):
            yield bytes(view[offset : offset + CHUNK_BYTES])
        return
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise InvalidArtifact(f"ctx.save_artifact: {str(path)!r} is not a file")
        with path.open("rb") as file:
            yield from _read_file(file)
        return
    if hasattr(source, "read"):
        yield from _read_file(source)
        return
    raise InvalidArtifact(f"ctx.save_artifact takes bytes, a path or a binary file object, not {type(source).__name__}")


def _read_file(file: Any) -> Iterator[bytes]:
    if isinstance(file, io.TextIOBase):
        raise InvalidArtifact("ctx.save_artifact: the file is open in text mode; open it with 'rb'")
    while chunk := file.read(CHUNK_BYTES):
        if not isinstance(chunk, bytes | bytearray):
            raise InvalidArtifact("ctx.save_artifact: the file object gave text, not bytes; open it with 'rb'")
        yield bytes(chunk)


def stream_into(chunks: Iterator[bytes], write: Callable[[bytes], None], *, name: str, limit: ByteLimit) -> Written:
    """Hand every chunk to ``write``, hashing and counting them.

    Raises:
      ArtifactTooLarge: the content passes ``limit`` (checked before the chunk that would pass it is written).
    """
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit.max_bytes:
            raise ArtifactTooLarge(f"ctx.save_artifact({name!r}): {limit.explain(size)}")
        digest.update(chunk)
        write(chunk)
    return Written(size, digest.hexdigest())


@dataclass(frozen=True)
class ByteLimit:
    """How many bytes one save may write: the smaller of the per-artifact limit and what the job has left."""

    max_artifact_bytes: int
    job_left_bytes: int
    max_job_bytes: int

    @property
    def max_bytes(self) -> int:
        return min(self.max_artifact_bytes, self.job_left_bytes)

    def explain(self, size: int) -> str:
        if self.max_artifact_bytes <= self.job_left_bytes:
            return (
                f"more than {self.max_artifact_bytes} bytes, the largest artifact allowed "
                "(ENGINEROOM_MAX_ARTIFACT_BYTES)"
            )
        return (
            f"more than the {self.job_left_bytes} bytes this job has left of the {self.max_job_bytes} bytes "
            "all its artifacts may take (ENGINEROOM_MAX_JOB_ARTIFACTS_BYTES)"
        )
