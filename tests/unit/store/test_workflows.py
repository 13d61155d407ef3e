"""WorkflowStore's conditional writes on mongomock-motor and SecantusDB: steps are appended only to a running
workflow, never with a taken id or past the cap, and a sweep's verdict is not applied once steps were added."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from mongomock_motor import AsyncMongoMockClient

from engineroom.core.clock import utcnow
from engineroom.core.config import Settings
from engineroom.core.ids import new_id
from engineroom.models.workflow import StepRecord, WorkflowDocument, WorkflowState
from engineroom.store.client import Database, connect
from engineroom.store.workflows import WorkflowStore


@pytest.fixture(params=["mongomock", "secantus"])
async def workflows(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[WorkflowStore]:
    if request.param == "mongomock":
        yield WorkflowStore(AsyncMongoMockClient(tz_aware=True)["test"])
        return
    mongodb_url: str = request.getfixturevalue("mongodb_url")
    client = connect(settings.model_copy(update={"mongodb_url": mongodb_url}))
    database: Database = client[settings.mongodb_db]
    yield WorkflowStore(database)
    client.close()


def step(step_id: str, *depends_on: str) -> StepRecord:
    return StepRecord(id=step_id, task="general.demo", job_id=new_id(), depends_on=list(depends_on))


async def stored(workflows: WorkflowStore, *steps: StepRecord) -> WorkflowDocument:
    workflow = WorkflowDocument(id=new_id(), tenant_id="acme", user_id="alice", steps=list(steps), created_at=utcnow())
    await workflows.insert(workflow)
    return workflow


async def test_steps_are_appended_in_order_to_a_running_workflow(workflows: WorkflowStore) -> None:
    workflow = await stored(workflows, step("a"))
    appended = await workflows.append_steps(workflow.id, [step("b", "a"), step("c", "b")], max_steps=10)
    assert appended is not None and [record.id for record in appended.steps] == ["a", "b", "c"]


async def test_an_ended_workflow_a_taken_id_or_the_cap_refuses_the_append(workflows: WorkflowStore) -> None:
    workflow = await stored(workflows, step("a"), step("b"))
    assert await workflows.append_steps(workflow.id, [step("c"), step("b")], max_steps=10) is None
    assert await workflows.append_steps(workflow.id, [step("c"), step("d")], max_steps=3) is None
    assert await workflows.append_steps(workflow.id, [step("c")], max_steps=3) is not None
    assert await workflows.finish(workflow.id, WorkflowState.CANCELLED)
    assert await workflows.append_steps(workflow.id, [step("d")], max_steps=10) is None


async def test_a_sweep_cannot_end_a_workflow_that_gained_steps_since_it_looked(workflows: WorkflowStore) -> None:
    # Given a sweep that saw one finished step
    workflow = await stored(workflows, step("a"))
    # When a step is appended before it writes its verdict
    assert await workflows.append_steps(workflow.id, [step("b", "a")], max_steps=10) is not None
    # Then the verdict does not apply, but one over the current steps does
    assert not await workflows.finish(workflow.id, WorkflowState.COMPLETED, step_count=1)
    assert await workflows.finish(workflow.id, WorkflowState.COMPLETED, step_count=2)
