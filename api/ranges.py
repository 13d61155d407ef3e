"""HTTP ``Range`` requests (RFC 9110 §14) for downloads: one byte range, so a browser can seek a video."""

from __future__ import annotations

import re
from dataclasses import dataclass

from engineroom.core.errors import RangeNotSatisfiable

_SINGLE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` up to, not including, ``end`` of a file of ``size_bytes``."""

    start: int
    end: int
    size_bytes: int

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end - 1}/{self.size_bytes}"


def parse_range(header: str | None, size_bytes: int) -> ByteRange | None:
    """The one range ``header`` asks for, or None to send the whole file: no header, a malformed one, or several
    ranges (the RFC lets a server ignore a ``Range`` it does not support).

    Raises:
      RangeNotSatisfiable: the range starts past the end (or asks for the last 0 bytes).
    """
    match = _SINGLE_RANGE.match(header.strip()) if header else None
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # the last ``last`` bytes
        suffix = int(last)
        if suffix == 0 or size_bytes == 0:
            raise RangeNotSatisfiable(size_bytes)
        return ByteRange(max(size_bytes - suffix, 0), size_bytes, size_bytes)
    start = int(first)
    end = size_bytes if last == "" else min(int(last) + 1, size_bytes)
    if last != "" and int(last) < start:
        return None  # invalid: ignored, as the RFC says
    if start >= size_bytes:
        raise RangeNotSatisfiable(size_bytes)
    return ByteRange(start, end, size_bytes)
