"""The one event envelope that travels workers → events exchange → gateways → browsers."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, Field

from engineroom.core.clock import utcnow
from engineroom.core.ids import new_id

if TYPE_CHECKING:
    from engineroom.models.queue import QueueDocument
    from engineroom.models.workflow import WorkflowDocument


class JobLike(Protocol):
    id: str
    tenant_id: str
    user_id: str
    task: str
    engine: str
    state: Any
    workflow_id: str | None


class EventType(StrEnum):
    JOB_PENDING = "job.pending"
    JOB_SCHEDULED = "job.scheduled"
    JOB_QUEUED = "job.queued"
    JOB_STARTED = "job.started"
    JOB_PROGRESS = "job.progress"
    #: A running job saved a file (``data``: its artifact record).
    JOB_ARTIFACT = "job.artifact"
    JOB_RETRYING = "job.retrying"
    JOB_COMPLETED = "job.completed"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"
    WORKFLOW_COMPLETED = "workflow.completed"
    WORKFLOW_FAILED = "workflow.failed"
    WORKFLOW_CANCELLED = "workflow.cancelled"
    QUEUE_PAUSED = "queue.paused"
    QUEUE_RESUMED = "queue.resumed"
    QUEUE_LIMITS = "queue.limits"
    NOTIFICATION_CREATED = "notification.created"


class Event(BaseModel):
    """An event. ``tenant_id`` and ``user_id`` name its audience: gateways deliver it only to them.

    DESIGN.md's envelope has no audience fields; without them every gateway would need a database read per
    event to authorize it, so they travel in the envelope (they only ever reach their own user).
    """

    id: str
    type: EventType
    ts: datetime
    tenant_id: str
    user_id: str | None = None
    #: ``owner``: the job's user; ``admins``: every admin's socket (queue events: engines are shared).
    audience: Literal["owner", "admins"] = "owner"
    job_id: str | None = None
    workflow_id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


def new_event(event_type: EventType, *, tenant_id: str, data: dict[str, Any], **fields: Any) -> Event:
    """An event with a fresh time-sortable id, stamped now."""
    return Event(id=new_id(), type=event_type, ts=utcnow(), tenant_id=tenant_id, data=data, **fields)


def job_event(job: JobLike, event_type: EventType, data: dict[str, Any] | None = None) -> Event:
    """The event that tells a job's owner about it."""
    return new_event(
        event_type,
        tenant_id=job.tenant_id,
        user_id=job.user_id,
        job_id=job.id,
        workflow_id=job.workflow_id,
        data={"state": str(job.state), "task": job.task, "engine": job.engine, **(data or {})},
    )


def queue_event(queue: QueueDocument, event_type: EventType, *, by: str) -> Event:
    """The event that tells admins an engine was paused, resumed or given new limits."""
    data = queue.model_dump(mode="json", exclude={"holders", "starts"})
    return new_event(event_type, tenant_id="*", audience="admins", data={**data, "by": by})


def workflow_event(workflow: WorkflowDocument, event_type: EventType, data: dict[str, Any]) -> Event:
    """The event that tells a workflow's owner it was completed, failed or cancelled."""
    return new_event(
        event_type,
        tenant_id=workflow.tenant_id,
        user_id=workflow.user_id,
        workflow_id=workflow.id,
        data={"state": event_type.split(".")[1], "name": workflow.name, **data},
    )
