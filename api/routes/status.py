"""``GET /status``: the pipeline at a glance (cluster-wide counts, like ``GET /queues``: no job shows through)."""

from __future__ import annotations

from fastapi import APIRouter

from engineroom.api.deps import PipelineReportDep, PrincipalDep
from engineroom.models.status import PipelineStatus

router = APIRouter(tags=["operations"])


@router.get("/status", response_model=PipelineStatus)
async def pipeline_status(report: PipelineReportDep, _who: PrincipalDep) -> PipelineStatus:
    """Totals by state, success rate, jobs per minute, the longest queue, the oldest queued job's age, the
    commonest errors and the run-time trend."""
    return await report.status()
