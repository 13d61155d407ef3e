"""Deleting the files of jobs that are gone: those the retention TTL or ``engineroom cleanup`` removed (MongoDB
deletes TTL'd documents itself, telling nobody). ``DELETE /jobs/{id}`` deletes a job's files at once."""

from __future__ import annotations

import logging

from engineroom.artifacts.base import ArtifactStore
from engineroom.store.jobs import JobStore

logger = logging.getLogger(__name__)

#: Job ids looked up per query while sweeping.
SWEEP_BATCH = 200


class ArtifactSweeper:
    """Each ``sweep`` checks up to ``per_sweep`` jobs that have files, resuming where the last one stopped, so one
    sweep's cost stays bounded however many jobs have files."""

    def __init__(self, artifacts: ArtifactStore, jobs: JobStore, per_sweep: int = 10 * SWEEP_BATCH) -> None:
        self.artifacts = artifacts
        self.jobs = jobs
        self.per_sweep = per_sweep
        self._after = ""

    async def sweep(self) -> int:
        """Delete the files of up to ``per_sweep`` jobs' worth of ids that no longer exist; how many jobs' files
        went."""
        job_ids = sorted(job_id for job_id in await self.artifacts.job_ids() if job_id > self._after)
        chosen = job_ids[: self.per_sweep]
        self._after = chosen[-1] if len(job_ids) > self.per_sweep else ""
        return await delete_orphans(self.artifacts, self.jobs, chosen)


async def delete_orphans(artifacts: ArtifactStore, jobs: JobStore, job_ids: list[str] | None = None) -> int:
    """Delete the files of the jobs among ``job_ids`` (default: every job with files) that no longer exist."""
    if job_ids is None:
        job_ids = await artifacts.job_ids()
    deleted = 0
    for start in range(0, len(job_ids), SWEEP_BATCH):
        batch = job_ids[start : start + SWEEP_BATCH]
        existing = await jobs.existing_ids(batch)
        for job_id in batch:
            if job_id not in existing:
                await artifacts.delete_job(job_id)
                deleted += 1
    if deleted:
        logger.info("deleted the artifacts of %d job(s) that are gone", deleted)
    return deleted
