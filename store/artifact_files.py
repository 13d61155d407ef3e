"""Artifacts in GridFS, in the job database itself: the default, so the embedded setup needs nothing new.

The files follow the GridFS layout (``fs.files`` and ``fs.chunks``, each file named ``<job id>/<name>`` with the job
id also in ``metadata.job_id``), so ``mongofiles`` and the drivers' buckets read them. They are written chunk by
chunk here rather than through the driver's bucket: pymongo's ``GridIn`` gathers chunks until they fill a 48 MB
message and sends them with one ``insert_many``, so a save held ~48 MB plus its encoding (~95 MB of worker memory
measured) however small its own chunks. Ranges are read chunk by chunk too, each an equality lookup on
``(files_id, n)``: GridFS's own reader asks for the chunks from ``n`` onward sorted by ``n``, which SecantusDB
sorts in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from bson import Binary, ObjectId

from engineroom.core.clock import utcnow
from engineroom.core.errors import NotFound
from engineroom.store.client import Database
from engineroom.store.errors import run_once, safe_to_repeat

#: Bytes per chunk of a saved file, in GridFS and in S3's multipart parts alike (``artifacts.base`` re-exports it).
CHUNK_BYTES = 1024 * 1024

#: The bucket's collection prefix (``fs.files``, ``fs.chunks``): GridFS's default, so tools see the files.
BUCKET_NAME = "fs"


def _filename(job_id: str, name: str) -> str:
    return f"{job_id}/{name}"


class GridFSWriter:
    """Inserts each ``CHUNK_BYTES`` as it fills, and the file document last, on ``commit``: readers find a file
    only once all of it is there."""

    def __init__(self, store: GridFSArtifactStore, filename: str, metadata: dict[str, Any]) -> None:
        self._store = store
        self._filename = filename
        self._metadata = metadata
        self._id = ObjectId()
        self._buffer = bytearray()
        self._chunks = 0
        self._length = 0

    async def write(self, chunk: bytes) -> None:
        self._buffer += chunk
        while len(self._buffer) >= CHUNK_BYTES:
            await self._insert_chunk(bytes(self._buffer[:CHUNK_BYTES]))
            del self._buffer[:CHUNK_BYTES]

    async def commit(self) -> None:
        if self._buffer:
            await self._insert_chunk(bytes(self._buffer))
            self._buffer.clear()
        document = {
            "_id": self._id,
            "length": self._length,
            "chunkSize": CHUNK_BYTES,
            "uploadDate": utcnow(),
            "filename": self._filename,
            "metadata": self._metadata,
        }
        await self._store.insert_file(document)
        await self._store.delete_older(self._filename, keep=self._id)

    async def abort(self) -> None:
        await self._store.delete_chunks(self._id)

    async def _insert_chunk(self, data: bytes) -> None:
        await self._store.insert_chunk({"files_id": self._id, "n": self._chunks, "data": Binary(data)})
        self._chunks += 1
        self._length += len(data)


class GridFSArtifactStore:
    """``ArtifactStore`` on GridFS."""

    def __init__(self, db: Database) -> None:
        self.files = db[f"{BUCKET_NAME}.files"]
        self.chunks = db[f"{BUCKET_NAME}.chunks"]

    @safe_to_repeat
    async def prepare(self) -> None:
        """The indexes the GridFS layout has (a driver's bucket makes them on its first write), and one for a job's
        files (deletes and sweeps)."""
        await self.files.create_index([("filename", 1), ("uploadDate", 1)])
        await self.chunks.create_index([("files_id", 1), ("n", 1)], unique=True)
        await self.files.create_index([("metadata.job_id", 1)], name="by_job")

    @run_once
    async def insert_chunk(self, chunk: dict[str, Any]) -> None:
        """One chunk of a file being written (once: a repeat of an applied insert would meet the unique index)."""
        await self.chunks.insert_one(chunk)

    @run_once
    async def insert_file(self, document: dict[str, Any]) -> None:
        """A file's document, written last: readers find the file only once all its chunks are there."""
        await self.files.insert_one(document)

    @safe_to_repeat
    async def delete_chunks(self, file_id: ObjectId) -> None:
        await self.chunks.delete_many({"files_id": file_id})

    async def open_writer(self, job_id: str, name: str, content_type: str) -> GridFSWriter:
        filename = _filename(job_id, name)
        metadata = {"job_id": job_id, "name": name, "content_type": content_type}
        return GridFSWriter(self, filename, metadata)

    async def open_reader(self, job_id: str, name: str, start: int, end: int) -> AsyncIterator[bytes]:
        file = await self._newest(_filename(job_id, name))
        chunk_size = int(file["chunkSize"])
        end = min(end, int(file["length"]))
        position = start
        while position < end:
            n, offset = divmod(position, chunk_size)
            chunk = await self._chunk(file["_id"], n)
            if chunk is None:
                raise NotFound(f"artifact {name} of job {job_id} is missing chunk {n}")
            data = bytes(chunk["data"])[offset : offset + end - position]
            position += len(data)
            yield data

    async def delete_job(self, job_id: str) -> None:
        for file_id in await self._ids({"metadata.job_id": job_id}):
            await self._delete(file_id)

    @safe_to_repeat
    async def job_ids(self) -> list[str]:
        return [str(job_id) for job_id in await self.files.distinct("metadata.job_id")]

    async def delete_older(self, filename: str, keep: Any) -> None:
        """Delete the files saved under ``filename`` before the one just committed (``keep``)."""
        for file_id in await self._ids({"filename": filename}):
            if file_id != keep:
                await self._delete(file_id)

    async def close(self) -> None:
        """The database client belongs to whoever built the store."""

    @safe_to_repeat
    async def _chunk(self, file_id: ObjectId, n: int) -> dict[str, Any] | None:
        chunk: dict[str, Any] | None = await self.chunks.find_one({"files_id": file_id, "n": n})
        return chunk

    @safe_to_repeat
    async def _newest(self, filename: str) -> dict[str, Any]:
        files = await self.files.find({"filename": filename}).to_list(None)
        if not files:
            raise NotFound(f"artifact {filename} not found")
        return max(files, key=lambda file: file["uploadDate"])

    @safe_to_repeat
    async def _ids(self, query: dict[str, Any]) -> list[ObjectId]:
        return [file["_id"] for file in await self.files.find(query, {"_id": 1}).to_list(None)]

    @safe_to_repeat
    async def _delete(self, file_id: ObjectId) -> None:
        await self.files.delete_one({"_id": file_id})
        await self.chunks.delete_many({"files_id": file_id})
