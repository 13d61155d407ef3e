"""Every REST call the clients make, as data: what to send and how to read the answer. No I/O here, so the sync
and async clients send the very same requests and parse them the same way."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypedDict, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from engineroom.client.errors import error_for
from engineroom.core.errors import InvalidRequest
from engineroom.models.artifact import ArtifactList
from engineroom.models.job import JobBatch, JobBatchAccepted, JobFilter, JobPage, JobPublic, JobState, JobSubmit
from engineroom.models.queue import PauseRequest, QueueLimits, QueueStats
from engineroom.models.workflow import StepSpec, WorkflowCreate, WorkflowPublic

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

_QUEUE_LIST = TypeAdapter(list[QueueStats])


class SubmitOptions(TypedDict, total=False):
    """``submit``'s keyword options: the fields of ``POST /jobs`` besides task and payload."""

    priority: int | str
    delay_s: float
    scheduled_at: datetime
    idempotency_key: str
    tags: Sequence[str]
    metadata: Mapping[str, Any]
    max_retries: int
    timeout_s: float
    depends_on: Sequence[str]


class FilterOptions(TypedDict, total=False):
    """``list``'s filters: the fields of ``JobFilter``."""

    state: JobState | str
    engine: str
    task: str
    tag: str
    workflow_id: str
    created_after: datetime
    created_before: datetime


class LimitOptions(TypedDict, total=False):
    """``set_limits``' keyword options: the limits to change; ``None`` removes an optional one."""

    max_concurrency: int
    max_starts_per_minute: int | None
    max_concurrency_per_tenant: int | None


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and the reader of its successful answer."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    body: Any = None
    params: Mapping[str, str] = field(default_factory=dict)
    #: Safe to resend after it may have reached the server (see ``RetryPlan``).
    idempotent: bool = False

    @property
    def description(self) -> str:
        return f"{self.method} {self.path}"

    def answer(self, response: httpx.Response) -> T:
        """The parsed answer.

        Raises:
          EngineroomError: the typed error for an error status, with the server's detail.
        """
        if response.status_code >= 400:
            raise error_for(response.status_code, response.content, dict(response.headers))
        return self.read(response)


def _model(model: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: model.model_validate_json(response.content)


def _nothing(_response: httpx.Response) -> None:
    return None


def _segment(value: str) -> str:
    """An id as one path segment, whatever it holds."""
    return quote(value, safe="")


def _validated(model: type[M], data: Mapping[str, Any]) -> M:
    """Check a body before sending it, with the server's own model; refusals read as the server's would.

    Raises:
      InvalidRequest: the data does not fit ``model``.
    """
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise InvalidRequest(str(exc)) from exc


def job_spec(task: str, payload: Mapping[str, Any] | None, options: SubmitOptions) -> JobSubmit:
    """The body of ``POST /jobs`` (options left out are left to the server's defaults)."""
    return _validated(JobSubmit, {"task": task, "payload": dict(payload or {}), **options})


def submit(spec: JobSubmit) -> Call[JobPublic]:
    body = spec.model_dump(mode="json", exclude_unset=True)
    return Call("POST", "/jobs", _model(JobPublic), body, idempotent=spec.idempotency_key is not None)


def submit_many(specs: Sequence[JobSubmit]) -> Call[JobBatchAccepted]:
    batch = JobBatch(jobs=list(specs))
    return Call("POST", "/jobs/batch", _model(JobBatchAccepted), batch.model_dump(mode="json", exclude_unset=True))


def get_job(job_id: str) -> Call[JobPublic]:
    return Call("GET", f"/jobs/{_segment(job_id)}", _model(JobPublic), idempotent=True)


def list_jobs(filters: FilterOptions, limit: int, cursor: str | None) -> Call[JobPage]:
    selection = _validated(JobFilter, filters)
    params = {key: str(value) for key, value in selection.model_dump(mode="json", exclude_none=True).items()}
    params["limit"] = str(limit)
    if cursor is not None:
        params["cursor"] = cursor
    return Call("GET", "/jobs", _model(JobPage), params=params, idempotent=True)


def cancel_job(job_id: str) -> Call[JobPublic]:
    # Cancelling twice ends the same way (the second answers 409 only if the first went through).
    return Call("POST", f"/jobs/{_segment(job_id)}/cancel", _model(JobPublic), idempotent=True)


def retry_job(job_id: str) -> Call[JobPublic]:
    return Call("POST", f"/jobs/{_segment(job_id)}/retry", _model(JobPublic))


def delete_job(job_id: str) -> Call[None]:
    return Call("DELETE", f"/jobs/{_segment(job_id)}", _nothing, idempotent=True)


def workflow_spec(
    steps: Sequence[StepSpec | Mapping[str, Any]], name: str | None, tags: Sequence[str]
) -> WorkflowCreate:
    return _validated(WorkflowCreate, {"name": name, "steps": [_step(step) for step in steps], "tags": list(tags)})


def _step(step: StepSpec | Mapping[str, Any]) -> StepSpec:
    return step if isinstance(step, StepSpec) else _validated(StepSpec, step)


def create_workflow(spec: WorkflowCreate) -> Call[WorkflowPublic]:
    return Call("POST", "/workflows", _model(WorkflowPublic), spec.model_dump(mode="json", exclude_unset=True))


def get_workflow(workflow_id: str) -> Call[WorkflowPublic]:
    return Call("GET", f"/workflows/{_segment(workflow_id)}", _model(WorkflowPublic), idempotent=True)


def cancel_workflow(workflow_id: str) -> Call[WorkflowPublic]:
    return Call("POST", f"/workflows/{_segment(workflow_id)}/cancel", _model(WorkflowPublic), idempotent=True)


def append_steps(workflow_id: str, steps: Sequence[StepSpec | Mapping[str, Any]]) -> Call[WorkflowPublic]:
    """``POST /workflows/{id}/steps`` with ``{"steps": [...]}``, each step shaped as at creation."""
    body = {"steps": [_step(step).model_dump(mode="json", exclude_unset=True) for step in steps]}
    return Call("POST", f"/workflows/{_segment(workflow_id)}/steps", _model(WorkflowPublic), body)


def pause_queue(engine: str, reason: str, until: datetime | None) -> Call[QueueStats]:
    request = _validated(PauseRequest, {"reason": reason, "until": until})
    body = request.model_dump(mode="json", exclude_none=True)
    return Call("POST", f"/queues/{_segment(engine)}/pause", _model(QueueStats), body, idempotent=True)


def resume_queue(engine: str) -> Call[QueueStats]:
    return Call("POST", f"/queues/{_segment(engine)}/resume", _model(QueueStats), idempotent=True)


def set_limits(engine: str, limits: LimitOptions) -> Call[QueueStats]:
    """Only the limits named change; ``None`` removes an optional one (as ``PUT /queues/{engine}/limits`` says)."""
    body = _validated(QueueLimits, limits).model_dump(mode="json", exclude_unset=True)
    return Call("PUT", f"/queues/{_segment(engine)}/limits", _model(QueueStats), body, idempotent=True)


def queue_stats(engine: str) -> Call[QueueStats]:
    return Call("GET", f"/queues/{_segment(engine)}", _model(QueueStats), idempotent=True)


def list_queues() -> Call[list[QueueStats]]:
    return Call("GET", "/queues", lambda response: _QUEUE_LIST.validate_json(response.content), idempotent=True)


def artifacts(job_id: str) -> Call[ArtifactList]:
    return Call("GET", f"/jobs/{_segment(job_id)}/artifacts", _model(ArtifactList), idempotent=True)


def artifact_path(job_id: str, name: str) -> str:
    """Where ``download`` fetches an artifact's bytes."""
    return f"/jobs/{_segment(job_id)}/artifacts/{_segment(name)}"
