"""``FileDownload``: a download lands in its path only whole and matching the sha256 the server sent."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from engineroom.client.downloads import FileDownload
from engineroom.client.errors import DownloadCorrupted
from engineroom.core.errors import NotFound


def answer(status: int, etag: str | None = None) -> httpx.Response:
    return httpx.Response(status, headers={"ETag": f'"{etag}"'} if etag else {})


def test_a_download_matching_its_etag_lands_in_its_path(tmp_path: Path) -> None:
    download = FileDownload(tmp_path / "out.bin")
    download.begin(answer(200, hashlib.sha256(b"hello world").hexdigest()))
    download.write(b"hello ")
    assert not (tmp_path / "out.bin").exists()  # only the .part while it runs
    download.write(b"world")
    assert download.finish().read_bytes() == b"hello world"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.bin"]


def test_a_download_that_does_not_match_its_etag_is_refused_and_removed(tmp_path: Path) -> None:
    download = FileDownload(tmp_path / "out.bin")
    download.begin(answer(200, hashlib.sha256(b"hello world").hexdigest()))
    download.write(b"hello there")
    with pytest.raises(DownloadCorrupted):
        download.finish()
    assert list(tmp_path.iterdir()) == []


def test_an_error_answer_raises_its_typed_error_and_writes_nothing(tmp_path: Path) -> None:
    download = FileDownload(tmp_path / "out.bin")
    with pytest.raises(NotFound, match="no artifact"):
        download.begin(answer(404), b'{"detail": "job X has no artifact y"}')
    download.abandon()
    assert list(tmp_path.iterdir()) == []
