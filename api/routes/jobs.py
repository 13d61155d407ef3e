"""``/jobs``: submit, read and list jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query

from engineroom.api.deps import JobStoreDep, PrincipalDep, SubmitterDep
from engineroom.core.ids import ID_LENGTH
from engineroom.models.job import JobFilter, JobPage, JobPublic, JobState, JobSubmit

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[str, Path(min_length=ID_LENGTH, max_length=ID_LENGTH, pattern="^[0-9A-Z]+$")]


@router.post("", status_code=202, response_model=JobPublic)
async def submit_job(
    body: JobSubmit,
    submitter: SubmitterDep,
    who: PrincipalDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobPublic:
    """Submit a job to its engine's queue."""
    return JobPublic.from_document(await submitter.submit(body, who, idempotency_key))


@router.get("", response_model=JobPage)
async def list_jobs(
    jobs: JobStoreDep,
    who: PrincipalDep,
    state: JobState | None = None,
    engine: str | None = None,
    task: str | None = None,
    tag: str | None = None,
    workflow_id: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(min_length=ID_LENGTH, max_length=ID_LENGTH, pattern="^[0-9A-Z]+$")] = None,
) -> JobPage:
    """List your jobs (admins: the tenant's), newest first."""
    filters = JobFilter(
        state=state,
        engine=engine,
        task=task,
        tag=tag,
        workflow_id=workflow_id,
        created_after=created_after,
        created_before=created_before,
    )
    return await jobs.list_visible(who, filters, limit=limit, cursor=cursor)


@router.get("/{job_id}", response_model=JobPublic)
async def get_job(job_id: JobId, jobs: JobStoreDep, who: PrincipalDep) -> JobPublic:
    """Read one job."""
    return JobPublic.from_document(await jobs.get_visible(job_id, who))
