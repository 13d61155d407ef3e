"""``/workers``: the live worker and scheduler processes, from their heartbeats (admins only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from engineroom.api.deps import from_state, require_admin
from engineroom.models.worker import WorkerPublic
from engineroom.store.workers import WorkerStore

router = APIRouter(prefix="/workers", tags=["operations"], dependencies=[Depends(require_admin)])

WorkerStoreDep = Annotated[WorkerStore, Depends(from_state("workers", WorkerStore))]


@router.get("", response_model=list[WorkerPublic])
async def list_workers(workers: WorkerStoreDep) -> list[WorkerPublic]:
    """Live workers and schedulers: engines, threads, current jobs, last heartbeat and backpressure."""
    return await workers.live()
