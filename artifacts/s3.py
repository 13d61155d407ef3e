"""Artifacts in S3-compatible object storage (AWS S3, MinIO, Ceph, moto), through boto3.

Chosen by ``ENGINEROOM_ARTIFACTS_URL=s3://bucket/prefix``; the endpoint and credentials come from boto3's usual
variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``). A file
is the object ``<prefix>/<job id>/<name>``, written as a multipart upload once it outgrows one part. boto3 blocks,
so every call runs in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from engineroom.artifacts.base import CHUNK_BYTES
from engineroom.core.errors import NotFound, StoreUnavailable

if TYPE_CHECKING:
    from botocore.client import BaseClient

#: Bytes buffered before a part is uploaded: S3 refuses parts under 5 MiB (the last excepted).
PART_BYTES = 8 * 1024 * 1024


def parse_s3_url(url: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket/prefix`` (the prefix may be empty).

    Raises:
      ValueError: not an ``s3://`` URL with a bucket.
    """
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"ENGINEROOM_ARTIFACTS_URL must look like s3://bucket/prefix, not {url!r}")
    return parts.netloc, parts.path.strip("/")


def _boto_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


class S3Writer:
    def __init__(self, store: S3ArtifactStore, key: str, content_type: str) -> None:
        self._store = store
        self._key = key
        self._content_type = content_type
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    async def write(self, chunk: bytes) -> None:
        self._buffer += chunk
        if len(self._buffer) >= PART_BYTES:
            await self._upload_part()

    async def commit(self) -> None:
        if self._upload_id is None:  # small: one request
            body = bytes(self._buffer)
            await self._store.call("put_object", Key=self._key, Body=body, ContentType=self._content_type)
            return
        if self._buffer:
            await self._upload_part()
        await self._store.call(
            "complete_multipart_upload",
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )

    async def abort(self) -> None:
        if self._upload_id is not None:
            await self._store.call("abort_multipart_upload", Key=self._key, UploadId=self._upload_id)

    async def _upload_part(self) -> None:
        if self._upload_id is None:
            started = await self._store.call("create_multipart_upload", Key=self._key, ContentType=self._content_type)
            self._upload_id = started["UploadId"]
        body, self._buffer = bytes(self._buffer), bytearray()
        number = len(self._parts) + 1
        answer = await self._store.call(
            "upload_part", Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=body
        )
        self._parts.append({"ETag": answer["ETag"], "PartNumber": number})


class S3ArtifactStore:
    """``ArtifactStore`` on an S3-compatible bucket."""

    def __init__(self, url: str, client: BaseClient | None = None) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        if client is None:
            try:
                import boto3  # the optional ``s3`` extra
            except ImportError:
                missing = "ENGINEROOM_ARTIFACTS_URL names an S3 bucket but boto3 is missing"
                raise RuntimeError(f"{missing}: pip install 'engineroom[s3]'") from None
            client = boto3.client("s3")
        self.client = client

    async def call(self, operation: str, **arguments: Any) -> Any:
        """Run one boto3 operation on this bucket, in a thread.

        Raises:
          NotFound: the object does not exist.
          StoreUnavailable: any other failure of the store.
        """
        method = getattr(self.client, operation)
        try:
            return await asyncio.to_thread(method, Bucket=self.bucket, **arguments)
        except _boto_errors() as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404", "InvalidRange"):
                raise NotFound("artifact not found") from exc
            raise StoreUnavailable(f"the artifact store (S3) failed: {exc}") from exc

    def key(self, job_id: str, name: str = "") -> str:
        return "/".join(part for part in (self.prefix, job_id, name) if part) + ("" if name else "/")

    async def prepare(self) -> None:
        """Check that the bucket answers (it is not created: that is the operator's, with its policies)."""
        await self.call("head_bucket")

    async def open_writer(self, job_id: str, name: str, content_type: str) -> S3Writer:
        return S3Writer(self, self.key(job_id, name), content_type)

    async def open_reader(self, job_id: str, name: str, start: int, end: int) -> AsyncIterator[bytes]:
        if end <= start:
            return
        answer = await self.call("get_object", Key=self.key(job_id, name), Range=f"bytes={start}-{end - 1}")
        body = answer["Body"]
        try:
            while chunk := await asyncio.to_thread(body.read, CHUNK_BYTES):
                yield chunk
        finally:
            body.close()

    async def delete_job(self, job_id: str) -> None:
        for keys in await self._pages(Prefix=self.key(job_id)):
            objects = [{"Key": item["Key"]} for item in keys.get("Contents", [])]
            if objects:
                await self.call("delete_objects", Delete={"Objects": objects, "Quiet": True})

    async def job_ids(self) -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        pages = await self._pages(Prefix=base, Delimiter="/")
        return [entry["Prefix"][len(base) :].rstrip("/") for page in pages for entry in page.get("CommonPrefixes", [])]

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)

    async def _pages(self, **arguments: Any) -> list[dict[str, Any]]:
        """Every page of a ``list_objects_v2`` (a delete collects a page's keys before deleting them)."""
        pages: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = await self.call("list_objects_v2", **arguments, **({"ContinuationToken": token} if token else {}))
            pages.append(page)
            token = page.get("NextContinuationToken")
            if not token:
                return pages
