"""What ``engineroom submit`` and ``engineroom watch`` do, on the client; ``cli.py`` only parses their arguments."""

from __future__ import annotations

import json
from collections.abc import Callable

from engineroom.client.async_client import AsyncClient
from engineroom.client.calls import SubmitOptions
from engineroom.client.config import ClientConfig
from engineroom.client.sync_client import Client
from engineroom.core.errors import InvalidRequest
from engineroom.models.event import Event
from engineroom.models.job import TERMINAL_STATES, JobPublic, JobState

#: Writes one line of output (``print`` in the CLI).
Emit = Callable[[str], None]


def submit_job(
    config: ClientConfig, task: str, payload_json: str, *, priority: str | None, wait_s: float | None, emit: Emit
) -> int:
    """Print the new job's id, or with ``wait_s`` its result once it finished; exit 1 unless it completed.

    Raises:
      EngineroomError: the API refused the job, or the wait ran out (``WaitTimedOut``).
    """
    payload = _json_object(payload_json)
    options: SubmitOptions = {} if priority is None else {"priority": int(priority) if priority.isdigit() else priority}
    with Client(config=config) as client:
        job = client.submit(task, payload, **options)
        if wait_s is None:
            emit(job.id)
            return 0
        return _report(client.wait(job.id, wait_s), emit)


def _json_object(text: str) -> dict[str, object]:
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise InvalidRequest(f"--payload is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("--payload must be a JSON object")
    return payload


def _report(job: JobPublic, emit: Emit) -> int:
    if job.state == JobState.COMPLETED:
        emit(json.dumps(job.result))
        return 0
    reason = f": {job.error.type}: {job.error.message}" if job.error else ""
    emit(f"job {job.id} {job.state}{reason}")
    return 1


async def watch_events(config: ClientConfig, job_id: str | None, emit: Emit) -> int:
    """Print events as JSON lines, resuming across dropped connections; with ``job_id``, that job's events until it
    has finished, else every event of your own jobs until interrupted."""
    async with AsyncClient(config=config) as client, client.events([f"job:{job_id}" if job_id else "mine"]) as stream:
        await stream.open()
        if job_id is not None and (await client.get(job_id)).state in TERMINAL_STATES:
            emit(f"job {job_id} has already finished")
            return 0
        async for event in stream:
            emit(event.model_dump_json())
            if _ends(event, job_id):
                return 0
    return 0


def _ends(event: Event, job_id: str | None) -> bool:
    return job_id is not None and event.job_id == job_id and event.data.get("state") in TERMINAL_STATES
