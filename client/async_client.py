"""``AsyncClient``: the REST API and the event stream from asyncio code, answering with the API's own models."""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, Unpack

import httpx

from engineroom.client import calls
from engineroom.client.calls import Call, FilterOptions, LimitOptions, SubmitOptions
from engineroom.client.config import ClientConfig
from engineroom.client.downloads import DOWNLOAD_CHUNK_BYTES, FileDownload
from engineroom.client.events import EventStream
from engineroom.client.waiting import DEFAULT_WAIT_S, wait_for_job
from engineroom.models.artifact import ArtifactPublic
from engineroom.models.job import JobBatchAccepted, JobPublic, JobSubmit
from engineroom.models.queue import QueueStats
from engineroom.models.workflow import StepSpec, WorkflowPublic

T = TypeVar("T")

#: Jobs fetched per page while ``list`` iterates (the API allows up to 200).
LIST_PAGE_SIZE = 100


class AsyncClient:
    """One user's view of the API. Use it as ``async with AsyncClient(url, token) as client:``.

    Errors are ``core/errors.py``'s (``NotFound``, ``RateLimited``, ...) carrying the server's ``detail``; 503s and
    connection errors are retried a bounded number of times first (``RetryPolicy``).
    """

    def __init__(
        self, base_url: str | None = None, token: str | None = None, *, config: ClientConfig | None = None
    ) -> None:
        self.config = config or ClientConfig.from_env(base_url, token)
        self._http = httpx.AsyncClient(
            base_url=self.config.base_url, headers=self.config.headers, timeout=self.config.timeout_s
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(self, call: Call[T]) -> T:
        """Send one call, retrying as its ``RetryPlan`` allows, and read its answer."""
        plan = self.config.retry.plan(call.description, idempotent=call.idempotent)
        while True:
            try:
                response = await self._http.request(call.method, call.path, json=call.body, params=call.params)
            except httpx.TransportError as exc:
                await asyncio.sleep(plan.delay_after_error(exc))
                continue
            delay_s = plan.delay_after_response(response)
            if delay_s is None:
                return call.answer(response)
            await asyncio.sleep(delay_s)

    async def submit(
        self, task: str, payload: Mapping[str, Any] | None = None, **options: Unpack[SubmitOptions]
    ) -> JobPublic:
        """Submit one job; with an ``idempotency_key``, the job that key already made if there is one."""
        return await self.send(calls.submit(calls.job_spec(task, payload, options)))

    async def submit_many(self, jobs: Sequence[JobSubmit]) -> JobBatchAccepted:
        """Submit up to 1,000 jobs at once: all are accepted or none; the answer lists their ids in order."""
        return await self.send(calls.submit_many(jobs))

    async def get(self, job_id: str) -> JobPublic:
        return await self.send(calls.get_job(job_id))

    async def list(
        self, *, page_size: int = LIST_PAGE_SIZE, **filters: Unpack[FilterOptions]
    ) -> AsyncIterator[JobPublic]:
        """Every job the filters select, newest first, fetched a page at a time as the iteration needs them."""
        cursor: str | None = None
        while True:
            page = await self.send(calls.list_jobs(filters, page_size, cursor))
            for job in page.items:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def cancel(self, job_id: str) -> JobPublic:
        return await self.send(calls.cancel_job(job_id))

    async def retry(self, job_id: str) -> JobPublic:
        return await self.send(calls.retry_job(job_id))

    async def delete(self, job_id: str) -> None:
        await self.send(calls.delete_job(job_id))

    async def artifacts(self, job_id: str) -> builtins.list[ArtifactPublic]:
        """The files the job saved, each with a short-lived signed ``url``."""
        return (await self.send(calls.artifacts(job_id))).items

    async def download(self, job_id: str, name: str, path: str | os.PathLike[str]) -> Path:
        """Stream artifact ``name`` of the job to ``path`` (never whole in memory), checked against its SHA-256.
        The file is written from the event loop's thread: chunks are small.

        Raises:
          NotFound: no such job or artifact (or not yours).
          DownloadCorrupted: the bytes do not match the SHA-256 the server announced.
        """
        download = FileDownload(path)
        try:
            async with self._http.stream("GET", calls.artifact_path(job_id, name)) as response:
                download.begin(response, await response.aread() if response.status_code >= 400 else b"")
                async for chunk in response.aiter_bytes(DOWNLOAD_CHUNK_BYTES):
                    download.write(chunk)
            return download.finish()
        except BaseException:
            download.abandon()
            raise

    async def wait(self, job_id: str, timeout_s: float = DEFAULT_WAIT_S) -> JobPublic:
        """The job once it has finished (completed, failed or cancelled), heard over the WebSocket, or by polling
        when the socket is refused.

        Raises:
          WaitTimedOut: not finished within ``timeout_s`` (the job goes on).
        """
        return await wait_for_job(self, job_id, timeout_s)

    def events(self, topics: Sequence[str] = ("mine",), after: str | None = None) -> EventStream:
        """Events of ``topics`` from after ``after`` (or from now) on, across reconnects, each once and in order."""
        return EventStream(self.config, topics, after)

    async def create_workflow(
        self, steps: Sequence[StepSpec | Mapping[str, Any]], *, name: str | None = None, tags: Sequence[str] = ()
    ) -> WorkflowPublic:
        return await self.send(calls.create_workflow(calls.workflow_spec(steps, name, tags)))

    async def get_workflow(self, workflow_id: str) -> WorkflowPublic:
        return await self.send(calls.get_workflow(workflow_id))

    async def cancel_workflow(self, workflow_id: str) -> WorkflowPublic:
        return await self.send(calls.cancel_workflow(workflow_id))

    async def append_steps(self, workflow_id: str, steps: Sequence[StepSpec | Mapping[str, Any]]) -> WorkflowPublic:
        """Add steps to a running workflow; they may depend on steps already there."""
        return await self.send(calls.append_steps(workflow_id, steps))

    async def pause(self, engine: str, reason: str, *, until: datetime | None = None) -> QueueStats:
        """Admins: stop starting the engine's jobs (running ones finish)."""
        return await self.send(calls.pause_queue(engine, reason, until))

    async def resume(self, engine: str) -> QueueStats:
        return await self.send(calls.resume_queue(engine))

    async def set_limits(self, engine: str, **limits: Unpack[LimitOptions]) -> QueueStats:
        return await self.send(calls.set_limits(engine, limits))

    async def queue_stats(self, engine: str) -> QueueStats:
        return await self.send(calls.queue_stats(engine))

    async def queues(self) -> builtins.list[QueueStats]:
        return await self.send(calls.list_queues())
