"""``/workflows``: DAGs of steps, each one job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from engineroom.api.deps import PrincipalDep, RateLimiterDep, WorkflowServiceDep
from engineroom.core.ids import ID_LENGTH
from engineroom.models.workflow import StepsAppend, WorkflowCreate, WorkflowPage, WorkflowPublic

router = APIRouter(prefix="/workflows", tags=["workflows"])

WorkflowId = Annotated[str, Path(min_length=ID_LENGTH, max_length=ID_LENGTH, pattern="^[0-9A-Z]+$")]


@router.post("", status_code=201, response_model=WorkflowPublic)
async def create_workflow(
    body: WorkflowCreate, service: WorkflowServiceDep, who: PrincipalDep, rate_limiter: RateLimiterDep
) -> WorkflowPublic:
    """Create a workflow; steps start as soon as their dependencies allow."""
    await rate_limiter.charge(who, len(body.steps))
    return await service.create(body, who)


@router.get("", response_model=WorkflowPage)
async def list_workflows(
    service: WorkflowServiceDep,
    who: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(min_length=ID_LENGTH, max_length=ID_LENGTH, pattern="^[0-9A-Z]+$")] = None,
) -> WorkflowPage:
    """List your workflows (admins: the tenant's), newest first."""
    return await service.list_visible(who, limit=limit, cursor=cursor)


@router.get("/{workflow_id}", response_model=WorkflowPublic)
async def get_workflow(workflow_id: WorkflowId, service: WorkflowServiceDep, who: PrincipalDep) -> WorkflowPublic:
    """Read a workflow with each step's state."""
    return await service.get(workflow_id, who)


@router.post("/{workflow_id}/cancel", response_model=WorkflowPublic)
async def cancel_workflow(workflow_id: WorkflowId, service: WorkflowServiceDep, who: PrincipalDep) -> WorkflowPublic:
    """Cancel a workflow and every unfinished step, running ones included."""
    return await service.cancel(workflow_id, who)


@router.post("/{workflow_id}/steps", response_model=WorkflowPublic)
async def append_steps(
    workflow_id: WorkflowId,
    body: StepsAppend,
    service: WorkflowServiceDep,
    who: PrincipalDep,
    rate_limiter: RateLimiterDep,
) -> WorkflowPublic:
    """Add steps to a running workflow; they may depend on its steps, and start as soon as those allow."""
    await rate_limiter.charge(who, len(body.steps))
    return await service.append(workflow_id, body, who)
