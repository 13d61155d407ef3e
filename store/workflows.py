"""The ``workflows`` collection: a workflow's steps and state; its steps' jobs live in ``jobs``."""

from __future__ import annotations

from typing import Any

from pymongo import ReturnDocument

from engineroom.core.clock import utcnow
from engineroom.core.errors import NotFound
from engineroom.models.principal import Principal
from engineroom.models.workflow import StepRecord, WorkflowDocument, WorkflowState
from engineroom.store.client import Database, journaled
from engineroom.store.documents import from_mongo, to_mongo
from engineroom.store.errors import run_once, safe_to_repeat
from engineroom.store.paging import newest_first
from engineroom.store.visibility import visible_to


class WorkflowStore:
    def __init__(self, db: Database) -> None:
        self.collection = db["workflows"]
        self._accepting = journaled(db, "workflows")

    @run_once
    async def insert(self, workflow: WorkflowDocument) -> None:
        """Run once: a repeat of an applied try would fail on its own id."""
        await self._accepting.insert_one(to_mongo(workflow))

    @safe_to_repeat
    async def get_visible(self, workflow_id: str, who: Principal) -> WorkflowDocument:
        """
        Raises:
          NotFound: absent or someone else's.
        """
        document = await self.collection.find_one({"_id": workflow_id, **visible_to(who)})
        if document is None:
            raise NotFound(f"workflow {workflow_id} not found")
        return from_mongo(WorkflowDocument, document)

    async def list_visible(
        self, who: Principal, *, limit: int, cursor: str | None
    ) -> tuple[list[WorkflowDocument], str | None]:
        """A page of ``who``'s workflows, newest first, and the cursor of the next page."""
        documents, more = await newest_first(self.collection, visible_to(who), limit=limit, cursor=cursor)
        workflows = [from_mongo(WorkflowDocument, document) for document in documents]
        return workflows, (workflows[-1].id if more else None)

    @safe_to_repeat
    async def running(self, limit: int) -> list[WorkflowDocument]:
        found = await self.collection.find({"state": str(WorkflowState.RUNNING)}).limit(limit).to_list(limit)
        return [from_mongo(WorkflowDocument, document) for document in found]

    @run_once
    async def append_steps(
        self, workflow_id: str, steps: list[StepRecord], *, max_steps: int
    ) -> WorkflowDocument | None:
        """Add steps to a workflow only while it runs, none of their ids is taken and it keeps at most ``max_steps``
        steps, in one conditional write; the workflow as it is now, or ``None`` if one of those no longer held.

        The conditions are checked by MongoDB, not by a read before the write: a workflow ending (or gaining the
        same step ids) concurrently cannot end up with steps it will never run. Run once: a repeat of an applied try
        would find the ids taken and report the steps refused.
        """
        query: dict[str, Any] = {
            "_id": workflow_id,
            "state": str(WorkflowState.RUNNING),
            "steps.id": {"$nin": [step.id for step in steps]},
            # the array has no element at this index: at most max_steps - len(steps) steps so far
            f"steps.{max_steps - len(steps)}": {"$exists": False},
        }
        update = {"$push": {"steps": {"$each": [step.model_dump() for step in steps]}}}
        document = await self.collection.find_one_and_update(query, update, return_document=ReturnDocument.AFTER)
        return None if document is None else from_mongo(WorkflowDocument, document)

    @safe_to_repeat
    async def finish(self, workflow_id: str, to: WorkflowState, *, step_count: int | None = None) -> bool:
        """Move a running workflow to its end state; False if it had already ended (say, cancelled).

        With ``step_count``, only if it still has that many steps: the sweep judged those, and steps appended since
        must run before the workflow can end. Safe to repeat: a conditional move (``store/errors.py``).
        """
        query: dict[str, Any] = {"_id": workflow_id, "state": str(WorkflowState.RUNNING)}
        if step_count is not None:
            query["steps"] = {"$size": step_count}
        outcome = await self.collection.update_one(query, {"$set": {"state": str(to), "finished_at": utcnow()}})
        return outcome.matched_count == 1
