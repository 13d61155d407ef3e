"""Writing a downloaded artifact to disk as it arrives, shared by both clients: into ``<path>.part``, checked
against the SHA-256 the server sends as ``ETag``, then renamed, so ``path`` only ever holds a whole, checked file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO

import httpx

from engineroom.client.errors import DownloadCorrupted, error_for

#: Bytes asked of the response per read while saving.
DOWNLOAD_CHUNK_BYTES = 1024 * 1024


class FileDownload:
    """One download into ``path``: ``begin`` with the response, ``write`` each chunk, then ``finish``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._part = self.path.with_name(self.path.name + ".part")
        self._digest = hashlib.sha256()
        self._file: BinaryIO | None = None
        self._expected: str | None = None

    def begin(self, response: httpx.Response, body: bytes = b"") -> None:
        """Check the answer's status (``body``: an error answer's content) and open the partial file.

        Raises:
          EngineroomError: the typed error of an error status.
        """
        if response.status_code >= 400:
            raise error_for(response.status_code, body, dict(response.headers))
        self._expected = response.headers.get("etag", "").strip('"') or None
        self._file = self._part.open("wb")

    def write(self, chunk: bytes) -> None:
        assert self._file is not None, "begin first"
        self._digest.update(chunk)
        self._file.write(chunk)

    def finish(self) -> Path:
        """Close and check the file, and move it to ``path``.

        Raises:
          DownloadCorrupted: its SHA-256 is not the ``ETag`` the server sent (the partial file is removed).
        """
        self.abandon(keep=True)
        if self._expected is not None and self._digest.hexdigest() != self._expected:
            self._part.unlink(missing_ok=True)
            raise DownloadCorrupted(f"{self.path.name}: sha256 {self._digest.hexdigest()}, expected {self._expected}")
        self._part.replace(self.path)
        return self.path

    def abandon(self, *, keep: bool = False) -> None:
        """Close the partial file, and remove it unless ``keep``."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if not keep:
            self._part.unlink(missing_ok=True)
