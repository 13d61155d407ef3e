"""Worker and scheduler processes as their heartbeat documents tell (collection ``workers``, ``GET /workers``)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class ProcessKind(StrEnum):
    #: A Dramatiq worker process running engine jobs.
    WORKER = "worker"
    #: An ``engineroom scheduler`` (or a gateway running the scheduler on its loop).
    SCHEDULER = "scheduler"
    #: An ``engineroom worker --autoscale`` command, which starts and drains worker processes (``autoscale``).
    SUPERVISOR = "supervisor"


class Backpressure(BaseModel):
    """Why a worker takes no new jobs right now, with the readings it judged by."""

    #: True while the worker's consumers are paused (host too busy, or draining to recycle).
    paused: bool = False
    reasons: list[str] = Field(default_factory=list)
    #: Set once the worker passed its RSS ceiling: it finishes its jobs, then exits to be restarted.
    recycling: bool = False
    cpu_percent: float | None = None
    memory_percent: float | None = None
    rss_mb: float | None = None


class Autoscale(BaseModel):
    """What an autoscaling supervisor runs now and why it last changed that."""

    #: Worker processes taking jobs (each an ``engineroom worker --processes 1``).
    processes: int
    #: Processes told to stop that are still finishing their running jobs.
    draining: int = 0
    min_processes: int
    max_processes: int
    #: Ready jobs of its engines at the last check (queued, not parked behind a concurrency limit).
    backlog: int
    #: The last scale-up or scale-down, with its reason; ``None`` until one happens.
    last_decision: str | None = None
    decided_at: datetime | None = None


class WorkerPublic(BaseModel):
    """One live process, as ``GET /workers`` lists it."""

    #: The process identity it signs leases and job records with (host:pid:random).
    id: str
    kind: ProcessKind
    host: str
    pid: int
    #: Engines (workers) whose queues it consumes.
    engines: list[str] = Field(default_factory=list)
    threads: int | None = None
    current_job_ids: list[str] = Field(default_factory=list)
    #: Schedulers: whether this one holds the leader lease.
    leader: bool | None = None
    #: Supervisors: the process count and the last scaling decision.
    autoscale: Autoscale | None = None
    backpressure: Backpressure = Field(default_factory=Backpressure)
    started_at: datetime
    last_heartbeat: datetime


class WorkerDocument(WorkerPublic):
    """As stored: the document lapses (and MongoDB's TTL monitor removes it) at ``expires_at``."""

    expires_at: datetime

    def public(self) -> WorkerPublic:
        return WorkerPublic.model_validate(self.model_dump(exclude={"expires_at"}))
