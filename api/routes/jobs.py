"""``/jobs``: submit, read and list jobs."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response

from engineroom.api.deps import (
    ArtifactStoreDep,
    JobControlDep,
    JobStoreDep,
    PrincipalDep,
    QueueControlDep,
    RateLimiterDep,
    SubmitterDep,
)
from engineroom.core.errors import StoreUnavailable
from engineroom.core.ids import ID_LENGTH
from engineroom.models.job import JobBatch, JobBatchAccepted, JobFilter, JobPage, JobPublic, JobState, JobSubmit

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[str, Path(min_length=ID_LENGTH, max_length=ID_LENGTH, pattern="^[0-9A-Z]+$")]


#: Longest ``?wait=`` a submit may ask for, in seconds.
MAX_SUBMIT_WAIT_S = 60.0


@router.post(
    "",
    status_code=202,
    response_model=JobPublic,
    responses={200: {"description": "An earlier job with the same idempotency key, or the job finished in `wait`"}},
)
async def submit_job(
    body: JobSubmit,
    submitter: SubmitterDep,
    jobs: JobStoreDep,
    who: PrincipalDep,
    rate_limiter: RateLimiterDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
    wait: Annotated[float | None, Query(gt=0, le=MAX_SUBMIT_WAIT_S, description="seconds to wait for the end")] = None,
) -> JobPublic:
    """Submit a job to its engine's queue (202), or get the job an idempotency key already made (200)."""
    await rate_limiter.charge(who)
    job, created = await submitter.submit(body, who, idempotency_key)
    if not created:
        response.status_code = 200
    if wait is not None and not job.is_terminal:
        job = await jobs.wait_until_finished(job.id, timeout_s=wait)
    if job.is_terminal:
        response.status_code = 200
    return JobPublic.from_document(job)


@router.post("/batch", status_code=202, response_model=JobBatchAccepted)
async def submit_jobs(
    body: JobBatch, submitter: SubmitterDep, who: PrincipalDep, rate_limiter: RateLimiterDep
) -> JobBatchAccepted:
    """Submit up to 1,000 jobs at once (all accepted or none); answers their ids in order."""
    await rate_limiter.charge(who, len(body.jobs))
    return JobBatchAccepted(ids=[job.id for job in await submitter.submit_many(body.jobs, who)])


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
async def get_job(job_id: JobId, jobs: JobStoreDep, queues: QueueControlDep, who: PrincipalDep) -> JobPublic:
    """Read one job; while it is queued, with its position in its engine's queue and a rough ``eta_s``."""
    document = await jobs.get_visible(job_id, who)
    job = JobPublic.from_document(document)
    if document.state == JobState.QUEUED:
        job.position = await jobs.position(document)
        job.eta_s = await queues.estimate_start_s(document.engine, job.position)
    return job


@router.post("/{job_id}/cancel", response_model=JobPublic)
async def cancel_job(job_id: JobId, control: JobControlDep, who: PrincipalDep) -> JobPublic:
    """Cancel a job that has not finished; a running job is interrupted."""
    return JobPublic.from_document(await control.cancel(job_id, who))


@router.post("/{job_id}/retry", response_model=JobPublic)
async def retry_job(job_id: JobId, control: JobControlDep, who: PrincipalDep) -> JobPublic:
    """Run a failed or cancelled job again (same id, history kept)."""
    return JobPublic.from_document(await control.retry(job_id, who))


@router.delete("/{job_id}", status_code=204)
async def delete_job(job_id: JobId, jobs: JobStoreDep, artifacts: ArtifactStoreDep, who: PrincipalDep) -> None:
    """Delete a finished job and its artifacts."""
    await jobs.delete_terminal(job_id, who)
    try:
        await artifacts.delete_job(job_id)
    except StoreUnavailable:  # the job is gone: the scheduler's artifact sweep deletes its files later
        logger.warning("the artifacts of deleted job %s were left for the sweep", job_id)
