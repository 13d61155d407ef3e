"""The task module of the artifact end-to-end tests (``ENGINEROOM_TASK_MODULES``): a task that streams a large
deterministic file into the artifact store and reports how much its worker process's memory grew meanwhile."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator

import psutil

from engineroom.actors import JobContext, task

#: The pattern repeats in blocks of this size: block ``i`` is a hash of ``i`` repeated.
BLOCK_BYTES = 1024 * 1024
#: Seconds between two looks at the worker's resident memory while it saves.
RSS_SAMPLE_S = 0.02


def pattern_block(index: int) -> bytes:
    return hashlib.sha256(index.to_bytes(8, "big")).digest() * (BLOCK_BYTES // 32)


def pattern_blocks(size_bytes: int) -> Iterator[bytes]:
    """The pattern's first ``size_bytes``, block by block."""
    for index, start in enumerate(range(0, size_bytes, BLOCK_BYTES)):
        yield pattern_block(index)[: size_bytes - start]


def pattern_slice(start: int, end: int) -> bytes:
    """Bytes ``start`` to ``end`` of the pattern (for checking ranges)."""
    first, last = start // BLOCK_BYTES, (end - 1) // BLOCK_BYTES
    joined = b"".join(pattern_block(index) for index in range(first, last + 1))
    offset = first * BLOCK_BYTES
    return joined[start - offset : end - offset]


class PatternFile:
    """A binary file object over the pattern: what a task streaming a rendered video out of a pipe looks like."""

    def __init__(self, size_bytes: int) -> None:
        self._blocks = pattern_blocks(size_bytes)
        self._pending = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._pending) < size:
            block = next(self._blocks, None)
            if block is None:
                break
            self._pending += block
        cut = len(self._pending) if size < 0 else size
        data, self._pending = self._pending[:cut], self._pending[cut:]
        return data


class PeakRss:
    """Samples this process's resident memory on a thread until stopped; ``growth_bytes`` is the peak over the
    first sample."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.start_bytes: int = self._process.memory_info().rss
        self.peak_bytes = self.start_bytes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_S):
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)
        return int(self.peak_bytes - self.start_bytes)


@task("video_pipeline", name="render_big", max_retries=0, timeout_s=1800)
def render_big(ctx: JobContext, size_bytes: int) -> dict[str, float]:
    """Save ``size_bytes`` of the pattern as ``big.bin`` from a file object, measuring the worker's memory."""
    rss = PeakRss()
    record = ctx.save_artifact("big.bin", PatternFile(size_bytes), content_type="video/mp4")
    growth = rss.stop()
    return {"rss_start_mb": rss.start_bytes / 2**20, "rss_growth_mb": growth / 2**20, "size_bytes": record.size_bytes}
