"""Workflows: a DAG of steps, each one job, started as soon as its dependencies allow."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engineroom.models.artifact import ArtifactRecord
from engineroom.models.job import JobSpec, JobState, StartCondition

#: Steps one request may create or append.
MAX_STEPS_PER_REQUEST = 200
#: Steps a workflow may hold in all: bounds the document and the sweep that reads every step's job.
MAX_WORKFLOW_STEPS = 1000

StepId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class WorkflowState(StrEnum):
    RUNNING = "running"
    #: Every step finished and none failed (skipped steps allowed).
    COMPLETED = "completed"
    #: Every step finished and at least one failed.
    FAILED = "failed"
    #: Cancelled by its owner; unfinished steps were cancelled with it.
    CANCELLED = "cancelled"


class StepSpec(JobSpec):
    """A step: the job it runs (``JobSpec``), its id, and when it may start."""

    id: StepId
    depends_on: list[StepId] = Field(default_factory=list, max_length=50)
    condition: StartCondition = "success"


def find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """A cycle in ``step -> dependencies`` as a list of step ids (first repeated last), or ``None``."""
    visiting: list[str] = []
    done: set[str] = set()

    def visit(step: str) -> list[str] | None:
        if step in visiting:
            return [*visiting[visiting.index(step) :], step]
        if step in done:
            return None
        visiting.append(step)
        for dependency in edges.get(step, []):
            cycle = visit(dependency)
            if cycle is not None:
                return cycle
        visiting.pop()
        done.add(step)
        return None

    for step in edges:
        cycle = visit(step)
        if cycle is not None:
            return cycle
    return None


def check_graph(steps: list[StepSpec], existing: Mapping[str, list[str]] | None = None) -> None:
    """Duplicate ids, dependencies on unknown steps and cycles, each named. ``existing`` holds the steps already in
    the workflow (id -> dependencies) when steps are appended: new steps may depend on them, never reuse their ids.

    Raises:
      ValueError: the first problem found.
    """
    existing = existing or {}
    ids = [step.id for step in steps]
    duplicates = sorted({step_id for step_id in ids if ids.count(step_id) > 1})
    if duplicates:
        raise ValueError(f"duplicate step ids: {', '.join(duplicates)}")
    taken = sorted(set(ids) & set(existing))
    if taken:
        raise ValueError(f"the workflow already has steps: {', '.join(taken)}")
    edges = {**existing, **{step.id: step.depends_on for step in steps}}
    for step in steps:
        unknown = [dependency for dependency in step.depends_on if dependency not in edges]
        if unknown:
            raise ValueError(f"step {step.id!r} depends on unknown steps: {', '.join(unknown)}")
    # Stored steps cannot gain dependencies, so a cycle needs a new step; the whole graph is searched all the same,
    # so that the check does not rely on that.
    cycle = find_cycle(edges)
    if cycle is not None:
        raise ValueError(f"steps form a cycle: {' -> '.join(cycle)}")


class WorkflowCreate(BaseModel):
    """Body of ``POST /workflows``."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    steps: list[StepSpec] = Field(min_length=1, max_length=MAX_STEPS_PER_REQUEST)
    tags: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _valid_graph(self) -> WorkflowCreate:
        check_graph(self.steps)
        return self


class StepsAppend(BaseModel):
    """Body of ``POST /workflows/{id}/steps``: steps shaped as at creation, checked against the stored ones by the
    service (``check_graph`` with ``existing``), since only it knows them."""

    model_config = ConfigDict(extra="forbid")

    steps: list[StepSpec] = Field(min_length=1, max_length=MAX_STEPS_PER_REQUEST)


class StepRecord(BaseModel):
    """A step as stored with its workflow: the spec's shape plus the job that runs it."""

    id: str
    task: str
    job_id: str
    depends_on: list[str] = Field(default_factory=list)
    condition: StartCondition = "success"


class WorkflowDocument(BaseModel):
    id: str
    tenant_id: str
    user_id: str
    name: str | None = None
    state: WorkflowState = WorkflowState.RUNNING
    steps: list[StepRecord]
    tags: list[str] = Field(default_factory=list)
    created_at: datetime
    finished_at: datetime | None = None


class StepPublic(StepRecord):
    state: JobState
    result: Any = None
    error: dict[str, Any] | None = None
    #: The files its job saved (download them from ``/jobs/{job_id}/artifacts``).
    artifacts: list[ArtifactRecord] = Field(default_factory=list)


class WorkflowPublic(BaseModel):
    id: str
    name: str | None
    state: WorkflowState
    steps: list[StepPublic]
    tags: list[str]
    created_at: datetime
    finished_at: datetime | None


class WorkflowPage(BaseModel):
    items: list[WorkflowPublic]
    next_cursor: str | None = None
