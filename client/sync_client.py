"""``Client``: the same calls as ``AsyncClient`` for plain, blocking code, on ``httpx.Client``.

Requests, retries and parsing come from ``calls`` and ``retry``, and the wait's decisions from ``waiting``, all
shared with the async client; only the sending differs. Nothing here runs an event loop, so every method works
where one is already running in the thread (a Jupyter notebook, an ``async def``), blocking it like any other call.
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, Unpack

import httpx

from engineroom.client import calls
from engineroom.client.async_client import LIST_PAGE_SIZE
from engineroom.client.calls import Call, FilterOptions, LimitOptions, SubmitOptions
from engineroom.client.config import ClientConfig
from engineroom.client.downloads import DOWNLOAD_CHUNK_BYTES, FileDownload
from engineroom.client.waiting import DEFAULT_WAIT_S, wait_for_job_blocking
from engineroom.models.artifact import ArtifactPublic
from engineroom.models.job import JobBatchAccepted, JobPublic, JobSubmit
from engineroom.models.queue import QueueStats
from engineroom.models.workflow import StepSpec, WorkflowPublic

T = TypeVar("T")


class Client:
    """One user's view of the API, blocking. Use it as ``with Client(url, token) as client:``; the methods and
    errors are ``AsyncClient``'s."""

    def __init__(
        self, base_url: str | None = None, token: str | None = None, *, config: ClientConfig | None = None
    ) -> None:
        self.config = config or ClientConfig.from_env(base_url, token)
        self._http = httpx.Client(
            base_url=self.config.base_url, headers=self.config.headers, timeout=self.config.timeout_s
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def send(self, call: Call[T]) -> T:
        """Send one call, retrying as its ``RetryPlan`` allows, and read its answer."""
        plan = self.config.retry.plan(call.description, idempotent=call.idempotent)
        while True:
            try:
                response = self._http.request(call.method, call.path, json=call.body, params=call.params)
            except httpx.TransportError as exc:
                time.sleep(plan.delay_after_error(exc))
                continue
            delay_s = plan.delay_after_response(response)
            if delay_s is None:
                return call.answer(response)
            time.sleep(delay_s)

    def submit(
        self, task: str, payload: Mapping[str, Any] | None = None, **options: Unpack[SubmitOptions]
    ) -> JobPublic:
        return self.send(calls.submit(calls.job_spec(task, payload, options)))

    def submit_many(self, jobs: Sequence[JobSubmit]) -> JobBatchAccepted:
        return self.send(calls.submit_many(jobs))

    def get(self, job_id: str) -> JobPublic:
        return self.send(calls.get_job(job_id))

    def list(self, *, page_size: int = LIST_PAGE_SIZE, **filters: Unpack[FilterOptions]) -> Iterator[JobPublic]:
        """Every job the filters select, newest first, a page at a time as the iteration needs them."""
        cursor: str | None = None
        while True:
            page = self.send(calls.list_jobs(filters, page_size, cursor))
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def cancel(self, job_id: str) -> JobPublic:
        return self.send(calls.cancel_job(job_id))

    def retry(self, job_id: str) -> JobPublic:
        return self.send(calls.retry_job(job_id))

    def delete(self, job_id: str) -> None:
        self.send(calls.delete_job(job_id))

    def artifacts(self, job_id: str) -> builtins.list[ArtifactPublic]:
        """The files the job saved, each with a short-lived signed ``url``."""
        return self.send(calls.artifacts(job_id)).items

    def download(self, job_id: str, name: str, path: str | os.PathLike[str]) -> Path:
        """Stream artifact ``name`` of the job to ``path`` (never whole in memory), checked against its SHA-256.

        Raises:
          NotFound: no such job or artifact (or not yours).
          DownloadCorrupted: the bytes do not match the SHA-256 the server announced.
        """
        download = FileDownload(path)
        try:
            with self._http.stream("GET", calls.artifact_path(job_id, name)) as response:
                download.begin(response, response.read() if response.status_code >= 400 else b"")
                for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
                    download.write(chunk)
            return download.finish()
        except BaseException:
            download.abandon()
            raise

    def wait(self, job_id: str, timeout_s: float = DEFAULT_WAIT_S) -> JobPublic:
        """The finished job, heard on a blocking WebSocket or polled (see ``AsyncClient.wait``)."""
        return wait_for_job_blocking(self, job_id, timeout_s)

    def create_workflow(
        self, steps: Sequence[StepSpec | Mapping[str, Any]], *, name: str | None = None, tags: Sequence[str] = ()
    ) -> WorkflowPublic:
        return self.send(calls.create_workflow(calls.workflow_spec(steps, name, tags)))

    def get_workflow(self, workflow_id: str) -> WorkflowPublic:
        return self.send(calls.get_workflow(workflow_id))

    def cancel_workflow(self, workflow_id: str) -> WorkflowPublic:
        return self.send(calls.cancel_workflow(workflow_id))

    def append_steps(self, workflow_id: str, steps: Sequence[StepSpec | Mapping[str, Any]]) -> WorkflowPublic:
        return self.send(calls.append_steps(workflow_id, steps))

    def pause(self, engine: str, reason: str, *, until: datetime | None = None) -> QueueStats:
        return self.send(calls.pause_queue(engine, reason, until))

    def resume(self, engine: str) -> QueueStats:
        return self.send(calls.resume_queue(engine))

    def set_limits(self, engine: str, **limits: Unpack[LimitOptions]) -> QueueStats:
        return self.send(calls.set_limits(engine, limits))

    def queue_stats(self, engine: str) -> QueueStats:
        return self.send(calls.queue_stats(engine))

    def queues(self) -> builtins.list[QueueStats]:
        return self.send(calls.list_queues())
