"""``/tasks``: the registered tasks and their payload schemas (the dashboard's submit form uses them)."""

from __future__ import annotations

from fastapi import APIRouter

from engineroom.api.deps import PrincipalDep
from engineroom.models.task import TaskInfo
from engineroom.services.registry import all_tasks

router = APIRouter(prefix="/tasks", tags=["tasks"])


@router.get("", response_model=list[TaskInfo])
async def list_tasks(_who: PrincipalDep) -> list[TaskInfo]:
    """List the tasks you can submit."""
    return [registered.info() for registered in all_tasks()]
