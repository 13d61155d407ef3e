"""The pure pieces of artifacts: Range parsing, signed links, chunking what a task hands over, the limits' messages,
the S3 URL, and the demo media files."""

from __future__ import annotations

import io
import struct
import time
import wave
import zlib
from pathlib import Path

import pytest

from engineroom.actors.media import make_gif, make_png, make_wav
from engineroom.api.ranges import ByteRange, parse_range
from engineroom.artifacts.base import CHUNK_BYTES
from engineroom.artifacts.s3 import parse_s3_url
from engineroom.artifacts.saving import (
    ArtifactTooLarge,
    ByteLimit,
    InvalidArtifact,
    guess_content_type,
    iter_chunks,
    stream_into,
)
from engineroom.artifacts.signing import check_signature, signed_path
from engineroom.core.config import Settings
from engineroom.core.errors import Forbidden, NotFound, RangeNotSatisfiable
from engineroom.models.artifact import check_artifact_name
from tests.settings import make_settings


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", ByteRange(0, 100, 1000)),
        ("bytes=990-", ByteRange(990, 1000, 1000)),
        ("bytes=-10", ByteRange(990, 1000, 1000)),
        ("bytes=-5000", ByteRange(0, 1000, 1000)),
        ("bytes=500-5000", ByteRange(500, 1000, 1000)),
        ("bytes=0-1,4-5", None),  # several ranges: the whole file
        ("bytes=9-3", None),  # invalid: ignored
        ("items=0-3", None),
        ("bytes=-", None),
    ],
)
def test_a_range_header_names_one_byte_range_or_none(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_a_range_past_the_end_is_not_satisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as raised:
        parse_range(header, 1000)
    assert raised.value.size_bytes == 1000


def test_a_range_names_its_bytes_in_content_range_form() -> None:
    assert ByteRange(10, 20, 100).content_range == "bytes 10-19/100" and ByteRange(10, 20, 100).length == 10


def test_a_signed_link_is_accepted_for_its_file_until_it_expires_and_for_nothing_else() -> None:
    settings = make_settings(jwt_secret="a" * 40)
    path, expires_at = signed_path(settings, "JOB1", "image.png", now_s=1000.0)
    assert expires_at == 1000 + int(settings.artifact_link_ttl_s)
    sig = path.split("sig=")[1]
    fresh = make_settings(jwt_secret="a" * 40, artifact_link_ttl_s=10**9)
    live_path, live_exp = signed_path(fresh, "JOB1", "image.png")
    live_sig = live_path.split("sig=")[1]
    check_signature(fresh, "JOB1", "image.png", live_exp, live_sig)
    for job_id, name, exp in (
        ("JOB2", "image.png", live_exp),
        ("JOB1", "other.png", live_exp),
        ("JOB1", "image.png", live_exp + 1),
    ):
        with pytest.raises(NotFound):
            check_signature(fresh, job_id, name, exp, live_sig)
    with pytest.raises(NotFound):  # not even ASCII
        check_signature(fresh, "JOB1", "image.png", live_exp, "é" * 64)
    with pytest.raises(NotFound):  # another secret: not signed here
        check_signature(make_settings(jwt_secret="b" * 40), "JOB1", "image.png", live_exp, live_sig)
    assert expires_at < time.time()
    with pytest.raises(Forbidden):
        check_signature(settings, "JOB1", "image.png", expires_at, sig)


def test_bytes_a_path_and_a_file_object_come_out_in_chunks(tmp_path: Path) -> None:
    content = bytes(range(256)) * (CHUNK_BYTES // 256 * 2 + 3)
    path = tmp_path / "file.bin"
    path.write_bytes(content)
    for source in (content, bytearray(content), memoryview(content), str(path), path, io.BytesIO(content)):
        chunks = list(iter_chunks(source))
        assert b"".join(chunks) == content and max(len(chunk) for chunk in chunks) == CHUNK_BYTES
    assert list(iter_chunks(b"")) == []


@pytest.mark.parametrize("source", [12, io.StringIO("text"), "/no/such/file", {"a": 1}])
def test_what_is_not_bytes_a_file_or_a_binary_file_object_is_refused(source: object) -> None:
    with pytest.raises(InvalidArtifact):
        list(iter_chunks(source))  # type: ignore[arg-type]


def test_a_save_stops_before_the_chunk_that_passes_its_limit_and_says_which_limit() -> None:
    written: list[bytes] = []
    per_artifact = ByteLimit(max_artifact_bytes=10, job_left_bytes=100, max_job_bytes=100)
    with pytest.raises(ArtifactTooLarge, match="ENGINEROOM_MAX_ARTIFACT_BYTES"):
        stream_into(iter([b"12345", b"67890", b"x"]), written.append, name="a.bin", limit=per_artifact)
    assert written == [b"12345", b"67890"]
    per_job = ByteLimit(max_artifact_bytes=10, job_left_bytes=4, max_job_bytes=100)
    with pytest.raises(ArtifactTooLarge, match="ENGINEROOM_MAX_JOB_ARTIFACTS_BYTES"):
        stream_into(iter([b"12345"]), written.append, name="a.bin", limit=per_job)
    result = stream_into(iter([b"ab", b"c"]), lambda chunk: None, name="a.bin", limit=per_artifact)
    assert (
        result.size_bytes == 3 and result.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "../x", "a b", "x" * 201, "é.png", "a.png\n"])
def test_artifact_names_are_plain_file_names(name: str) -> None:
    with pytest.raises(ValueError):
        check_artifact_name(name)
    assert check_artifact_name("image-1_final.v2.png") == "image-1_final.v2.png"


def test_a_content_type_is_given_guessed_from_the_name_or_refused() -> None:
    assert (
        guess_content_type("a.png", None) == "image/png" and guess_content_type("a", None) == "application/octet-stream"
    )
    assert guess_content_type("a", "text/plain; charset=utf-8") == "text/plain; charset=utf-8"
    for bad in ("png", "text/html\r\nSet-Cookie: x=1", "", "a/b c"):
        with pytest.raises(InvalidArtifact):
            guess_content_type("a.bin", bad)


def test_an_s3_url_names_a_bucket_and_a_prefix() -> None:
    assert parse_s3_url("s3://bucket/some/prefix/") == ("bucket", "some/prefix")
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    for bad in ("http://bucket/x", "s3:///prefix"):
        with pytest.raises(ValueError):
            parse_s3_url(bad)
    with pytest.raises(ValueError, match="ENGINEROOM_ARTIFACTS_URL"):
        Settings(artifacts_url="gs://bucket")
    assert Settings(artifacts_url="").artifacts_url == ""  # an empty variable: GridFS


def test_the_demo_png_is_valid_and_deterministic() -> None:
    png = make_png(33, 21, seed=4)
    assert png == make_png(33, 21, seed=4) != make_png(33, 21, seed=5)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks = 8, {}
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind, data = png[offset + 4 : offset + 8], png[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", png[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + data) == crc
        chunks[kind] = data
        offset += 12 + length
    assert struct.unpack(">II", chunks[b"IHDR"][:8]) == (33, 21)
    assert len(zlib.decompress(chunks[b"IDAT"])) == 21 * (1 + 33 * 3)


def test_the_demo_wav_lasts_as_long_as_asked() -> None:
    with wave.open(io.BytesIO(make_wav(1.25, 330.0))) as audio:
        assert audio.getnchannels() == 1 and audio.getsampwidth() == 2
        assert audio.getnframes() / audio.getframerate() == pytest.approx(1.25, abs=1 / 22050)


def test_the_demo_gif_has_its_frames() -> None:
    gif = make_gif(20, 10, 7)
    assert gif[:6] == b"GIF89a" and struct.unpack("<HH", gif[6:10]) == (20, 10) and gif[-1:] == b"\x3b"
    assert gif.count(b"\x21\xf9\x04") == 7 and gif == make_gif(20, 10, 7)
