"""Creating, reading and cancelling workflows; the scheduler advances them (scheduler/workflows.py)."""

from __future__ import annotations

from engineroom.core.clock import utcnow
from engineroom.core.errors import Conflict, InvalidRequest, InvalidTransition
from engineroom.core.ids import new_id
from engineroom.models.event import EventType, workflow_event
from engineroom.models.job import TERMINAL_STATES, JobDocument, JobSpec, JobState, JobSubmit
from engineroom.models.principal import Principal
from engineroom.models.workflow import (
    MAX_WORKFLOW_STEPS,
    StepPublic,
    StepRecord,
    StepsAppend,
    StepSpec,
    WorkflowCreate,
    WorkflowDocument,
    WorkflowPage,
    WorkflowPublic,
    WorkflowState,
    check_graph,
)
from engineroom.services.control import JobControl
from engineroom.services.publisher import AsyncEventPublisher
from engineroom.services.submission import JobSubmitter
from engineroom.store.jobs import JobStore
from engineroom.store.workflows import WorkflowStore


def _records(steps: list[StepSpec], jobs: list[JobDocument]) -> list[StepRecord]:
    """The steps as stored with their workflow, each naming its job."""
    return [
        StepRecord(id=step.id, task=job.task, job_id=job.id, depends_on=step.depends_on, condition=step.condition)
        for step, job in zip(steps, jobs, strict=True)
    ]


def _step_public(step: StepRecord, job: JobDocument | None) -> StepPublic:
    if job is None:  # its job was deleted
        return StepPublic(**step.model_dump(), state=JobState.CANCELLED)
    error = job.error.model_dump() if job.error is not None else None
    return StepPublic(**step.model_dump(), state=job.state, result=job.result, error=error, artifacts=job.artifacts)


class WorkflowService:
    def __init__(
        self,
        workflows: WorkflowStore,
        jobs: JobStore,
        submitter: JobSubmitter,
        control: JobControl,
        publisher: AsyncEventPublisher,
    ) -> None:
        self.workflows = workflows
        self.jobs = jobs
        self.submitter = submitter
        self.control = control
        self.publisher = publisher

    async def create(self, body: WorkflowCreate, who: Principal) -> WorkflowPublic:
        """Store the workflow and one job per step; steps without dependencies start at once.

        Raises:
          InvalidRequest: a step names an unknown task or a payload that does not fit it (the step is named).
        """
        workflow_id = new_id()
        job_ids = {step.id: new_id() for step in body.steps}
        jobs = [self._step_job(step, workflow_id, job_ids, who) for step in body.steps]
        workflow = WorkflowDocument(
            id=workflow_id,
            tenant_id=who.tenant_id,
            user_id=who.user_id,
            name=body.name,
            steps=_records(body.steps, jobs),
            tags=body.tags,
            created_at=utcnow(),
        )
        # Steps first: the scheduler ends a workflow whose steps have all finished, so it must never see the
        # workflow without its steps.
        await self.jobs.insert_many(jobs)
        await self.workflows.insert(workflow)
        await self.submitter.announce_and_send(jobs)
        return await self.describe(workflow)

    async def append(self, workflow_id: str, body: StepsAppend, who: Principal) -> WorkflowPublic:
        """Add steps to a running workflow; they may depend on its steps or on each other. A step whose dependencies
        have finished is released by the scheduler's next sweep like any pending step (its inputs included), or
        skipped there if its condition can no longer hold.

        Raises:
          NotFound: not the caller's workflow.
          InvalidRequest: the steps do not fit the workflow (unknown dependency, taken id, cycle, unknown task,
            too many steps); the message names the step.
          InvalidTransition: the workflow has ended.
        """
        workflow = await self.workflows.get_visible(workflow_id, who)
        self._check_append(workflow, body)
        job_ids = {step.id: step.job_id for step in workflow.steps} | {step.id: new_id() for step in body.steps}
        jobs = [self._step_job(step, workflow_id, job_ids, who) for step in body.steps]
        # Jobs first, as at creation; the write that adds their steps is conditional on the workflow still running,
        # so one that ended meanwhile never gains them: its new jobs are withdrawn instead.
        await self.jobs.insert_many(jobs)
        appended = await self.workflows.append_steps(
            workflow_id, _records(body.steps, jobs), max_steps=MAX_WORKFLOW_STEPS
        )
        if appended is None:
            await self._withdraw(jobs, who)
            # It ended, or a concurrent append took an id or the room: the same checks say which.
            self._check_append(await self.workflows.get_visible(workflow_id, who), body)
            raise Conflict(f"workflow {workflow_id} changed meanwhile; try again")
        await self.submitter.announce_and_send(jobs)
        return await self.describe(appended)

    @staticmethod
    def _check_append(workflow: WorkflowDocument, body: StepsAppend) -> None:
        if workflow.state != WorkflowState.RUNNING:
            raise InvalidTransition(
                f"workflow {workflow.id} has already ended ({workflow.state}); no steps can be added"
            )
        if len(workflow.steps) + len(body.steps) > MAX_WORKFLOW_STEPS:
            raise InvalidRequest(f"a workflow holds at most {MAX_WORKFLOW_STEPS} steps; it has {len(workflow.steps)}")
        try:
            check_graph(body.steps, existing={step.id: step.depends_on for step in workflow.steps})
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None

    async def _withdraw(self, jobs: list[JobDocument], who: Principal) -> None:
        """Cancel these jobs whatever their state (running ones too), passing over those that finished meanwhile."""
        for job in jobs:
            try:
                await self.control.cancel(job.id, who)
            except InvalidTransition:
                pass  # it finished meanwhile

    def _step_job(self, step: StepSpec, workflow_id: str, job_ids: dict[str, str], who: Principal) -> JobDocument:
        body = JobSubmit(**step.model_dump(include=set(JobSpec.model_fields)))
        try:
            job = self.submitter.build(body, who)
        except InvalidRequest as exc:
            raise InvalidRequest(f"step {step.id!r}: {exc.detail}") from None
        if not step.depends_on:
            return job.model_copy(update={"id": job_ids[step.id], "workflow_id": workflow_id, "step_id": step.id})
        step_job = job.model_copy(update={"id": job_ids[step.id], "workflow_id": workflow_id, "step_id": step.id})
        dependencies = [job_ids[dependency] for dependency in step.depends_on]
        return step_job.waiting_on(dependencies, step.condition, "waiting for its steps")

    async def get(self, workflow_id: str, who: Principal) -> WorkflowPublic:
        return await self.describe(await self.workflows.get_visible(workflow_id, who))

    async def list_visible(self, who: Principal, *, limit: int, cursor: str | None) -> WorkflowPage:
        workflows, next_cursor = await self.workflows.list_visible(who, limit=limit, cursor=cursor)
        return WorkflowPage(items=[await self.describe(workflow) for workflow in workflows], next_cursor=next_cursor)

    async def cancel(self, workflow_id: str, who: Principal) -> WorkflowPublic:
        """Cancel the workflow and every unfinished step, running ones included.

        Raises:
          NotFound: not the caller's workflow.
          InvalidTransition: it has already ended.
        """
        workflow = await self.workflows.get_visible(workflow_id, who)
        if not await self.workflows.finish(workflow_id, WorkflowState.CANCELLED):
            raise InvalidTransition(f"workflow {workflow_id} has already ended ({workflow.state})")
        # Read again after ending it: steps appended just before are cancelled too, and none can be appended after.
        cancelled = await self.workflows.get_visible(workflow_id, who)
        jobs = await self.jobs.outcomes([step.job_id for step in cancelled.steps])
        await self._withdraw([job for job in jobs if job.state not in TERMINAL_STATES], who)
        await self.publisher.publish(workflow_event(cancelled, EventType.WORKFLOW_CANCELLED, {}))
        return await self.describe(cancelled)

    async def describe(self, workflow: WorkflowDocument) -> WorkflowPublic:
        """The workflow with each step's current state (one query for all its jobs)."""
        jobs = {job.id: job for job in await self.jobs.outcomes([step.job_id for step in workflow.steps])}
        steps = [_step_public(step, jobs.get(step.job_id)) for step in workflow.steps]
        return WorkflowPublic(**workflow.model_dump(exclude={"steps", "tenant_id", "user_id"}), steps=steps)
