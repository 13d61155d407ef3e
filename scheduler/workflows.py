"""Ending workflows: once every step has finished, the workflow is completed (no step failed) or failed."""

from __future__ import annotations

from engineroom.models.event import EventType, workflow_event
from engineroom.models.job import TERMINAL_STATES, JobDocument, JobState
from engineroom.models.workflow import WorkflowDocument, WorkflowState
from engineroom.services.publisher import AsyncEventPublisher
from engineroom.store.jobs import JobStore
from engineroom.store.workflows import WorkflowStore

#: Workflows one sweep looks at.
WORKFLOW_BATCH = 200


def end_state(workflow: WorkflowDocument, steps: list[JobDocument]) -> WorkflowState | None:
    """The workflow's end state once every one of its steps finished, else ``None``."""
    if len(steps) < len(workflow.steps) or any(step.state not in TERMINAL_STATES for step in steps):
        return None
    return WorkflowState.FAILED if any(step.state == JobState.FAILED for step in steps) else WorkflowState.COMPLETED


async def finish_workflows(workflows: WorkflowStore, jobs: JobStore, publisher: AsyncEventPublisher) -> None:
    for workflow in await workflows.running(WORKFLOW_BATCH):
        steps = await jobs.outcomes([step.job_id for step in workflow.steps])
        state = end_state(workflow, steps)
        if state is None or not await workflows.finish(workflow.id, state, step_count=len(workflow.steps)):
            continue
        event_type = EventType.WORKFLOW_COMPLETED if state == WorkflowState.COMPLETED else EventType.WORKFLOW_FAILED
        step_states = {step.step_id: str(step.state) for step in steps}
        await publisher.publish(workflow_event(workflow, event_type, {"steps": step_states}))
