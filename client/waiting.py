"""Waiting for a job to finish: hear it on the WebSocket, poll ``GET /jobs/{id}`` if the socket is refused.

The job is read once the socket is subscribed (its topic is in the URL, so it is subscribed by the ``hello``): a
job that finished before the socket opened is seen by that read, and one that finishes later sends its event to
a socket already listening. Nothing can fall between the two.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from engineroom.client.errors import WaitTimedOut
from engineroom.client.events import MAX_FRAME_BYTES
from engineroom.models.event import EventType
from engineroom.models.job import TERMINAL_STATES, JobPublic

if TYPE_CHECKING:
    from engineroom.client.async_client import AsyncClient

logger = logging.getLogger(__name__)

#: How long ``wait`` waits unless told.
DEFAULT_WAIT_S = 300.0
#: Polling (the fallback) starts this often and slows down to the cap.
POLL_START_S = 0.2
POLL_CAP_S = 2.0
#: Events after which the job is read again: one of them ends it.
FINAL_EVENT_TYPES = frozenset({EventType.JOB_COMPLETED, EventType.JOB_FAILED, EventType.JOB_CANCELLED})


class _SocketUnavailable(Exception):
    """The WebSocket could not be opened or dropped: polling takes over."""


async def wait_for_job(client: AsyncClient, job_id: str, timeout_s: float) -> JobPublic:
    """The finished job.

    Raises:
      WaitTimedOut: still unfinished after ``timeout_s``.
      NotFound and the other errors of ``GET /jobs/{id}``.
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    try:
        async with asyncio.timeout_at(deadline):
            return await _wait_on_socket(client, job_id)
    except _SocketUnavailable as exc:
        logger.warning("waiting for %s: the WebSocket is unavailable (%s); polling instead", job_id, exc.__cause__)
    except TimeoutError:
        raise WaitTimedOut(f"job {job_id} did not finish within {timeout_s:g} s") from None
    return await _poll(client, job_id, deadline, timeout_s)


async def _wait_on_socket(client: AsyncClient, job_id: str) -> JobPublic:
    socket = await _open(client, job_id)
    async with socket:
        try:
            await socket.recv()  # the hello: the socket is subscribed from here on
            job = await client.get(job_id)
            while job.state not in TERMINAL_STATES:
                frame = json.loads(await socket.recv())
                if frame.get("job_id") == job_id and frame.get("type") in FINAL_EVENT_TYPES:
                    job = await client.get(job_id)
            return job
        except ConnectionClosed as exc:
            raise _SocketUnavailable from exc


async def _open(client: AsyncClient, job_id: str) -> ClientConnection:
    url = client.config.ws_url([f"job:{job_id}"])
    try:
        return await connect(url, open_timeout=client.config.timeout_s, max_size=MAX_FRAME_BYTES)
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        # A refused handshake too: a proxy without WebSockets, or a job that is not ours, which the poll's
        # GET then reports as the typed error it is.
        raise _SocketUnavailable from exc


async def _poll(client: AsyncClient, job_id: str, deadline: float, timeout_s: float) -> JobPublic:
    loop = asyncio.get_running_loop()
    interval_s = POLL_START_S
    while True:
        job = await client.get(job_id)
        if job.state in TERMINAL_STATES:
            return job
        remaining_s = deadline - loop.time()
        if remaining_s <= 0:
            raise WaitTimedOut(f"job {job_id} did not finish within {timeout_s:g} s (it is {job.state})")
        await asyncio.sleep(min(interval_s, remaining_s))
        interval_s = min(interval_s * 2, POLL_CAP_S)
