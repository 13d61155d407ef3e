"""``/jobs/{id}/artifacts``: list a job's files and download them, whole or by range, with a token or a signed link."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.responses import StreamingResponse

from engineroom.api.deps import ArtifactStoreDep, BearerDep, JobStoreDep, PrincipalDep, SettingsDep, get_principal
from engineroom.api.ranges import ByteRange, parse_range
from engineroom.api.routes.jobs import JobId
from engineroom.artifacts.base import ArtifactStore
from engineroom.artifacts.signing import check_signature, signed_path
from engineroom.core.errors import NotFound, Unauthenticated
from engineroom.models.artifact import ARTIFACT_NAME_PATTERN, ArtifactList, ArtifactPublic, ArtifactRecord
from engineroom.models.job import JobDocument

router = APIRouter(prefix="/jobs", tags=["artifacts"])

ArtifactName = Annotated[str, Path(min_length=1, max_length=200, pattern=ARTIFACT_NAME_PATTERN)]

#: A file never changes under its ETag (a new save is a new sha256); private: it is one user's.
CACHE_CONTROL = "private, max-age=300"
#: Sent with every download: the browser must not guess a type (a file saved as text/html must not run as a page
#: of this origin), and a document opened from it runs sandboxed.
SAFETY_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}


@router.get("/{job_id}/artifacts", response_model=ArtifactList)
async def list_artifacts(job_id: JobId, jobs: JobStoreDep, who: PrincipalDep, settings: SettingsDep) -> ArtifactList:
    """The files the job saved, each with a signed link that works without a token for a short while."""
    job = await jobs.get_visible(job_id, who)
    items = []
    for record in job.artifacts:
        url, expires_at = signed_path(settings, job.id, record.name)
        expiry = datetime.fromtimestamp(expires_at, UTC)
        items.append(ArtifactPublic.model_validate({**record.model_dump(), "url": url, "url_expires_at": expiry}))
    return ArtifactList(items=items)


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=StreamingResponse,
    responses={
        200: {"description": "The whole file", "content": {"application/octet-stream": {}}},
        206: {"description": "The byte range asked for with `Range`"},
        304: {"description": "`If-None-Match` names the file's ETag: the copy the client holds is current"},
        416: {"description": "The range starts past the end of the file"},
    },
)
async def download_artifact(
    job_id: JobId,
    name: ArtifactName,
    jobs: JobStoreDep,
    artifacts: ArtifactStoreDep,
    settings: SettingsDep,
    credentials: BearerDep,
    range_header: Annotated[str | None, Header(alias="Range", max_length=200)] = None,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match", max_length=1000)] = None,
    exp: Annotated[int | None, Query(ge=0, description="expiry of a signed link (unix seconds)")] = None,
    sig: Annotated[str | None, Query(max_length=128, description="signature of a signed link")] = None,
) -> Response:
    """Download a file with the owner's or an admin's token, or with a signed link (``exp`` and ``sig``, from the
    list); ``Range: bytes=a-b`` answers 206 with that part."""
    if exp is not None or sig is not None:
        if exp is None or sig is None:
            raise Unauthenticated("a signed link needs both exp and sig")
        check_signature(settings, job_id, name, exp, sig)
        job = await jobs.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found")
    else:
        job = await jobs.get_visible(job_id, get_principal(settings, credentials))
    record = _record(job, name)
    etag = f'"{record.sha256}"'
    if if_none_match is not None and _matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": CACHE_CONTROL})
    byte_range = parse_range(range_header, record.size_bytes)
    chosen = byte_range or ByteRange(0, record.size_bytes, record.size_bytes)
    headers = {
        **SAFETY_HEADERS,
        "Accept-Ranges": "bytes",
        "Content-Length": str(chosen.length),
        "ETag": etag,
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(record.name)}",
        "Cache-Control": CACHE_CONTROL,
    }
    if byte_range is not None:
        headers["Content-Range"] = byte_range.content_range
    body = _stream(artifacts, job.id, name, chosen)
    await body.__anext__()  # opens the file now: a missing one is a 404, not a broken 200
    return StreamingResponse(
        body, status_code=206 if byte_range else 200, media_type=record.content_type, headers=headers
    )


def _matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` list names ``etag`` (weak or strong) or is ``*``."""
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _record(job: JobDocument, name: str) -> ArtifactRecord:
    for record in job.artifacts:
        if record.name == name:
            return record
    raise NotFound(f"job {job.id} has no artifact {name}")


async def _stream(store: ArtifactStore, job_id: str, name: str, chosen: ByteRange) -> AsyncIterator[bytes]:
    """First yields an empty chunk once the store opened the file, then the bytes."""
    reader = store.open_reader(job_id, name, chosen.start, chosen.end)
    first = await anext(reader, b"")
    yield b""
    if first:
        yield first
    async for chunk in reader:
        yield chunk
