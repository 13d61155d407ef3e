"""The job: its states, the submit body, the stored document and the public view."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, JsonValue, model_validator

from engineroom.core.ids import new_id
from engineroom.models.artifact import ArtifactRecord


class JobState(StrEnum):
    #: Waiting for the jobs it depends on.
    PENDING = "pending"
    #: Waiting for its `scheduled_at` time.
    SCHEDULED = "scheduled"
    #: On its engine's queue, waiting for a worker.
    QUEUED = "queued"
    #: A worker is running its task.
    RUNNING = "running"
    #: Failed transiently; waiting for `next_attempt_at`.
    RETRYING = "retrying"
    #: Finished with a result. Terminal.
    COMPLETED = "completed"
    #: Finished with an error. Terminal.
    FAILED = "failed"
    #: Stopped by a user. Terminal.
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})

#: The longest delay a submit may ask for: a year.
MAX_DELAY_S = 366 * 24 * 3600

#: When a job with dependencies may start (workflow steps choose; plain jobs wait for success).
StartCondition = Literal["success", "completion", "failure"]

#: Named priorities accepted wherever a priority is (DESIGN.md).
PRIORITY_NAMES: dict[str, int] = {"low": 0, "normal": 5, "high": 8, "critical": 10}


def _priority_from_name(value: Any) -> Any:
    if isinstance(value, str):
        if value.lower() in PRIORITY_NAMES:
            return PRIORITY_NAMES[value.lower()]
        raise ValueError(f"priority must be 0-10 or one of {', '.join(PRIORITY_NAMES)}")
    if isinstance(value, bool):
        raise ValueError("priority must be an integer 0-10, not a boolean")
    return value


Priority = Annotated[int, BeforeValidator(_priority_from_name), Field(ge=0, le=10, strict=True)]
#: Every ``Priority``, from the first to start to the last.
PRIORITIES_HIGHEST_FIRST: tuple[int, ...] = tuple(range(10, -1, -1))


class Progress(BaseModel):
    percent: float = Field(0.0, ge=0, le=100)
    message: str | None = None
    details: dict[str, JsonValue] = Field(default_factory=dict)


class JobError(BaseModel):
    type: str
    message: str
    traceback: str | None = None
    transient: bool = False


class HistoryEntry(BaseModel):
    state: JobState
    at: datetime
    detail: str | None = None
    #: The error of the attempt that ended here (on ``retrying`` and ``failed``).
    error: JobError | None = None


class Usage(BaseModel):
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


#: Deepest nesting a payload or metadata may have. MongoDB refuses documents nested past 100 levels, and the job
#: document, a workflow step's inputs and stored results wrap these in a few more: refused at submit with a 422
#: naming the limit, not when the store or a worker meets it.
MAX_JSON_DEPTH = 64


def _within_depth(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """Level by level, not recursively: the check must not be the thing a deep body overflows."""
    level: list[Any] = [value]
    for _ in range(MAX_JSON_DEPTH):
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
        if not level:
            return value
    raise ValueError(f"nests deeper than {MAX_JSON_DEPTH} levels")


JsonObject = Annotated[dict[str, JsonValue], AfterValidator(_within_depth)]


class JobSpec(BaseModel):
    """What a job runs and how: shared by ``POST /jobs`` and the job a cron schedule submits at each tick."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=3, max_length=200, description="`<engine>.<name>`, as listed by GET /tasks")
    payload: JsonObject = Field(default_factory=dict)
    priority: Priority = PRIORITY_NAMES["normal"]
    max_retries: int | None = Field(None, ge=0, le=100)
    timeout_s: float | None = Field(None, gt=0, le=7 * 24 * 3600)
    tags: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(default_factory=list, max_length=50)
    metadata: JsonObject = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _require_object(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("the request body must be a JSON object")
        return data


class JobSubmit(JobSpec):
    """Body of ``POST /jobs``."""

    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
    #: Start no earlier than this many seconds from now (or at ``scheduled_at``, timezone required).
    delay_s: float | None = Field(None, ge=0, le=MAX_DELAY_S)
    scheduled_at: datetime | None = None
    #: Start only once these jobs (yours) have completed; the job waits ``pending`` until then.
    depends_on: list[Annotated[str, Field(min_length=26, max_length=26)]] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _one_way_to_wait(self) -> JobSubmit:
        if self.delay_s is not None and self.scheduled_at is not None:
            raise ValueError("give delay_s or scheduled_at, not both")
        if self.scheduled_at is not None and self.scheduled_at.tzinfo is None:
            raise ValueError("scheduled_at must carry a timezone (e.g. 2026-11-26T09:00:00Z)")
        if self.depends_on and (self.delay_s is not None or self.scheduled_at is not None):
            raise ValueError("a job waits either for a time or for other jobs: give depends_on or a delay, not both")
        if len(set(self.depends_on)) != len(self.depends_on):
            raise ValueError("depends_on lists a job twice")
        return self


class _JobFields(BaseModel):
    id: str
    tenant_id: str
    user_id: str
    engine: str
    task: str
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: int = PRIORITY_NAMES["normal"]
    state: JobState
    progress: Progress = Field(default_factory=Progress)
    result: Any = None
    error: JobError | None = None
    attempts: int = 0
    max_retries: int = 0
    timeout_s: float | None = None
    scheduled_at: datetime | None = None
    created_at: datetime
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = None
    workflow_id: str | None = None
    step_id: str | None = None
    depends_on: list[str] = Field(default_factory=list)
    #: With ``depends_on``: start once every dependency completed (success), finished whatever the outcome
    #: (completion), or once one of them failed (failure).
    condition: StartCondition = "success"
    #: Results of the dependencies, by step id (workflows) or job id, handed to the task as ``ctx.inputs``.
    inputs: dict[str, Any] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)
    #: Files the task saved (``ctx.save_artifact``), oldest first; their bytes are in the artifact store.
    artifacts: list[ArtifactRecord] = Field(default_factory=list)
    history: list[HistoryEntry] = Field(default_factory=list)
    #: When a ``retrying`` job is due for its next attempt.
    next_attempt_at: datetime | None = None
    #: ``attempts`` when the job was last retried by hand; automatic retries count from there.
    attempts_before_retry: int = 0


class JobDocument(_JobFields):
    """A job as stored in the ``jobs`` collection; only store/ and actors/ handle it."""

    #: Set with every move to ``queued`` and cleared once its broker message is known sent (outbox).
    needs_dispatch: bool = False
    #: Which setting of that flag it is (new with each): a sender clears only the flag its own message answers,
    #: never one set again since (a parked job released anew, a retry) whose send may have failed.
    dispatch_token: str | None = None
    #: ``id`` and ``ts`` of the ``job.completed`` / ``job.failed`` event, stored with the outcome so the same
    #: event can be published again if its worker died before it did.
    outcome_event: dict[str, Any] | None = None
    #: ``queued`` but held in MongoDB (its message consumed) until its engine's limits or pause let it start.
    parked: bool = False
    #: While ``running``: the worker process that runs it, and until when its heartbeat vouches for it.
    worker_id: str | None = None
    lease_expires_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def with_outbox_flag(self) -> JobDocument:
        """The new job as first stored: flagged for sending (the outbox) if it is queued, with a token of its own."""
        return self.model_copy(update={"needs_dispatch": self.state == JobState.QUEUED, "dispatch_token": new_id()})

    def in_batch(self, token: str) -> JobDocument:
        """The new job as stored in a batch: covered by the batch's outbox record (``token``), no flag of its own."""
        return self.model_copy(update={"needs_dispatch": False, "dispatch_token": token})

    def waiting_on(self, depends_on: list[str], condition: StartCondition, detail: str) -> JobDocument:
        """The new job made to wait ``pending`` for ``depends_on`` instead: not queued, so nothing to send."""
        return self.model_copy(
            update={
                "depends_on": depends_on,
                "condition": condition,
                "state": JobState.PENDING,
                "queued_at": None,
                "needs_dispatch": False,
                "history": [HistoryEntry(state=JobState.PENDING, at=self.created_at, detail=detail)],
            }
        )

    @property
    def may_retry(self) -> bool:
        """Whether a transient failure of the attempt just made leaves automatic retries."""
        return self.attempts - self.attempts_before_retry <= self.max_retries


class JobStart(BaseModel):
    """A worker's start of a queued job. Besides the move to ``running`` and one more attempt, the start records who
    runs it, since when and until when its lease holds, and clears the marks of a waiting job."""

    worker_id: str
    started_at: datetime
    #: Until when the job's lease holds, from the run's own start: the heartbeat renews the jobs that run, not those
    #: admitted and waiting.
    lease_until: datetime
    #: The detail of its ``running`` history entry.
    detail: str

    def changes(self) -> dict[str, Any]:
        """The job's fields the start sets, besides its state and attempts."""
        return {
            "started_at": self.started_at,
            "worker_id": self.worker_id,
            "lease_expires_at": self.lease_until,
            "needs_dispatch": False,
            "next_attempt_at": None,
            "parked": False,
        }

    def entry(self) -> HistoryEntry:
        return HistoryEntry(state=JobState.RUNNING, at=self.started_at, detail=self.detail)

    def applied_to(self, job: JobDocument) -> JobDocument:
        """The queued ``job`` as this start leaves it (before any write)."""
        return job.model_copy(update={"state": JobState.RUNNING, "attempts": job.attempts + 1, **self.changes()})


@dataclass(frozen=True)
class RunningAttempt:
    """An attempt whose start is written: its outcome lands only while the job still runs that very attempt on that
    worker. Were the job taken from it (its lease judged lost) and started again elsewhere, a late outcome must not land
    on the other attempt."""

    worker_id: str
    attempts: int


#: How an attempt whose outcome is being written stands: its start not written yet (the outcome's write records it
#: too: queued → running → outcome), written (the outcome is fenced to it), or never made (the job could not start).
AttemptState: TypeAlias = JobStart | RunningAttempt | None


class JobPublic(_JobFields):
    """A job as the API shows it."""

    #: While queued: how many jobs of its engine start before it, and a rough estimate of when it starts.
    position: int | None = None
    eta_s: float | None = None

    @classmethod
    def from_document(cls, document: JobDocument) -> JobPublic:
        return cls.model_validate(document.model_dump())


class JobBatch(BaseModel):
    """Body of ``POST /jobs/batch``."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[JobSubmit] = Field(min_length=1, max_length=1000)


class JobBatchAccepted(BaseModel):
    ids: list[str]


class JobPage(BaseModel):
    """One page of ``GET /jobs``, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""

    items: list[JobPublic]
    next_cursor: str | None = None


class JobFilter(BaseModel):
    """What ``GET /jobs`` may filter on, besides ownership."""

    state: JobState | None = None
    engine: str | None = None
    task: str | None = None
    tag: str | None = None
    workflow_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
