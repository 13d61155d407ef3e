"""Artifact benchmark: writing and reading a file through engineroom's GridFS artifact store, against the driver's
own GridFS bucket on the same database, in one run.

(a) engineroom: ``GridFSArtifactStore`` (``store/artifact_files.py``) writes ``--size-mb`` of incompressible bytes in
1 MiB chunks (``open_writer``, ``write`` per chunk, ``commit``), then reads the whole file back (``open_reader``).

(b) raw GridFS: motor's ``AsyncIOMotorGridFSBucket`` (bucket ``raw``, the same database) writes the same chunks
(``open_upload_stream``, ``write`` per chunk, ``close``) and reads them back (``open_download_stream``,
``readchunk`` until empty).

Both run in this process on a fresh ``secantusd-py``; repeats interleave (engineroom, raw, engineroom, raw, ...)
and each file is deleted after its repeat. Reported: write and read MB/s (1 MB = 10^6 bytes) per side, and, from
one extra write of each side after the timed ones (under ``tracemalloc``, so not timed), the peak of Python memory
a write held: the driver's bucket gathers chunks into 48 MB ``insert_many`` messages, engineroom's store sends
each chunk as it fills.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorGridFSBucket

from bench._common import RESULTS_DIR, Comparison, database, machine, parser_for, spread, table, write_result
from engineroom.artifacts.base import CHUNK_BYTES
from engineroom.store.artifact_files import GridFSArtifactStore

DEFAULT_OUTPUT = RESULTS_DIR / "artifacts.json"
#: Distinct chunks the file cycles through (incompressible, and not one object written over and over).
DISTINCT_CHUNKS = 8


@dataclass(frozen=True)
class ArtifactBenchConfig:
    size_mb: int
    repeat: int


@dataclass(frozen=True)
class Sample:
    side: str
    repeat: int
    write_mb_per_s: float
    read_mb_per_s: float


Side = tuple[Callable[[list[bytes]], Awaitable[Any]], Callable[[Any], Awaitable[int]], Callable[[Any], Awaitable[None]]]


def _payload(size_mb: int) -> list[bytes]:
    """The file's chunks: ``size_mb`` MB of random bytes, cycling through a few distinct 1 MiB chunks."""
    distinct = [os.urandom(CHUNK_BYTES) for _ in range(DISTINCT_CHUNKS)]
    total = size_mb * 1_000_000
    sizes = [min(CHUNK_BYTES, total - start) for start in range(0, total, CHUNK_BYTES)]
    return [distinct[index % DISTINCT_CHUNKS][:size] for index, size in enumerate(sizes)]


def _engineroom_side(store: GridFSArtifactStore) -> Side:
    async def write(chunks: list[bytes]) -> str:
        writer = await store.open_writer("bench", "file.bin", "application/octet-stream")
        for chunk in chunks:
            await writer.write(bytes(chunk))
        await writer.commit()
        return "bench"

    async def read(job_id: str) -> int:
        total = 0
        async for chunk in store.open_reader(job_id, "file.bin", 0, 2**62):
            total += len(chunk)
        return total

    return write, read, store.delete_job


def _raw_side(bucket: AsyncIOMotorGridFSBucket) -> Side:
    async def write(chunks: list[bytes]) -> Any:
        upload = bucket.open_upload_stream("file.bin", chunk_size_bytes=CHUNK_BYTES)
        for chunk in chunks:
            await upload.write(bytes(chunk))
        await upload.close()
        return upload._id

    async def read(file_id: Any) -> int:
        download = await bucket.open_download_stream(file_id)
        total = 0
        while chunk := await download.readchunk():
            total += len(chunk)
        return total

    return write, read, bucket.delete


async def _measure(side: Side, name: str, repeat: int, chunks: list[bytes]) -> Sample:
    write, read, delete = side
    size_mb = sum(len(chunk) for chunk in chunks) / 1e6
    started = time.perf_counter()
    handle = await write(chunks)
    written_s = time.perf_counter() - started
    started = time.perf_counter()
    read_bytes = await read(handle)
    read_s = time.perf_counter() - started
    assert read_bytes == size_mb * 1e6, f"{name} read {read_bytes} bytes"
    await delete(handle)
    return Sample(name, repeat, size_mb / written_s, size_mb / read_s)


async def _peak_write_mb(side: Side, chunks: list[bytes]) -> float:
    write, _read, delete = side
    tracemalloc.start()
    try:
        handle = await write(chunks)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    await delete(handle)
    return peak / 1e6


async def _run_async(config: ArtifactBenchConfig, mongodb_url: str) -> tuple[list[Sample], dict[str, float]]:
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(mongodb_url)
    try:
        db = client["bench_artifacts"]
        store = GridFSArtifactStore(db)
        await store.prepare()
        sides = {"engineroom": _engineroom_side(store), "raw": _raw_side(AsyncIOMotorGridFSBucket(db, "raw"))}
        chunks = _payload(config.size_mb)
        samples = []
        for repeat in range(1, config.repeat + 1):
            for name, side in sides.items():
                samples.append(sample := await _measure(side, name, repeat, chunks))
                speeds = f"write {sample.write_mb_per_s:7.1f} MB/s  read {sample.read_mb_per_s:7.1f} MB/s"
                print(f"  #{repeat} {name:<10} {speeds}")
        peaks = {name: await _peak_write_mb(side, chunks) for name, side in sides.items()}
        return samples, peaks
    finally:
        client.close()


def run(config: ArtifactBenchConfig) -> dict[str, Any]:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-artifacts-") as work_dir:
        with database(Path(work_dir)) as (mongodb_url, _pid):
            samples, peaks = asyncio.run(_run_async(config, mongodb_url))
    rows = [
        (
            f"{side} {what} MB/s",
            [getattr(sample, what.replace(" ", "_") + "_mb_per_s") for sample in samples if sample.side == side],
        )
        for what in ("write", "read")
        for side in ("engineroom", "raw")
    ]
    rows += [(f"{side} write peak Python MB", [peak]) for side, peak in peaks.items()]
    result: dict[str, Any] = {
        "config": asdict(config),
        "samples": [asdict(sample) for sample in samples],
        "summary": {name: spread(values) for name, values in rows},
        "table": table(rows),
        **machine(load_before),
    }
    return result


def comparisons(result: dict[str, Any]) -> list[Comparison]:
    """The suite's lines: write and read MB/s against the driver's bucket; no target (a baseline)."""
    summary, size_mb = result["summary"], result["config"]["size_mb"]
    return [
        Comparison(
            figure=f"artifact {what} MB/s (GridFS, {size_mb} MB file)",
            engineroom=summary[f"engineroom {what} MB/s"],
            baseline=summary[f"raw {what} MB/s"],
            baseline_is="motor's AsyncIOMotorGridFSBucket on the same database, same run",
            target="-",
            met=None,
        )
        for what in ("write", "read")
    ]


def parse_args(argv: list[str] | None) -> tuple[ArtifactBenchConfig, Path]:
    parser = parser_for("artifacts", __doc__)
    parser.add_argument("--size-mb", type=int, default=64, help="size of the file written and read, in MB")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved engineroom/raw pairs")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.size_mb < 1 or args.repeat < 1:
        parser.error("--size-mb and --repeat must be at least 1")
    return ArtifactBenchConfig(size_mb=args.size_mb, repeat=args.repeat), args.output


def main(argv: list[str] | None = None) -> int:
    config, output = parse_args(argv)
    print(
        f"artifacts: a {config.size_mb} MB file x {config.repeat} repeats, engineroom's GridFS store and the driver's"
    )
    result = run(config)
    write_result(output, result)
    print(result["table"])
    print(f"cpus: {result['cpus']}  load average before/after: {result['loadavg_1_5_15']}")
    print(f"written: {output}")
    return 0
