"""``/queues``: every engine's figures for everyone; pause, resume and limits for admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from engineroom.api.deps import PrincipalDep, QueueControlDep, require_admin
from engineroom.core.config import ENGINES
from engineroom.models.queue import PauseRequest, QueueLimits, QueueStats

router = APIRouter(prefix="/queues", tags=["queues"])

Engine = Annotated[str, Path(pattern="^(" + "|".join(ENGINES) + ")$", description="one of the eight engines")]
AdminOnly = [Depends(require_admin)]


@router.get("", response_model=list[QueueStats])
async def list_queues(control: QueueControlDep, _who: PrincipalDep) -> list[QueueStats]:
    """Every engine at a glance."""
    return await control.describe()


@router.get("/{engine}", response_model=QueueStats)
async def get_queue(engine: Engine, control: QueueControlDep, _who: PrincipalDep) -> QueueStats:
    """One engine at a glance, with its commonest errors over the last day and its run times per hour."""
    return await control.analyse(engine)


@router.post("/{engine}/pause", response_model=QueueStats, dependencies=AdminOnly)
async def pause_queue(engine: Engine, body: PauseRequest, control: QueueControlDep, who: PrincipalDep) -> QueueStats:
    """Stop starting jobs of this engine (running ones finish; submits still queue up)."""
    await control.pause(engine, body, who)
    return (await control.describe(engine))[0]


@router.post("/{engine}/resume", response_model=QueueStats, dependencies=AdminOnly)
async def resume_queue(engine: Engine, control: QueueControlDep, who: PrincipalDep) -> QueueStats:
    """Start this engine's backlog again, in priority order."""
    await control.resume(engine, who)
    return (await control.describe(engine))[0]


@router.put("/{engine}/limits", response_model=QueueStats, dependencies=AdminOnly)
async def set_queue_limits(
    engine: Engine, body: QueueLimits, control: QueueControlDep, who: PrincipalDep
) -> QueueStats:
    """Change this engine's limits, live, across the cluster."""
    await control.set_limits(engine, body, who)
    return (await control.describe(engine))[0]
