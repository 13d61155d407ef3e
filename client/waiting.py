"""Waiting for a job to finish: hear it on the WebSocket, poll ``GET /jobs/{id}`` if the socket is refused.

The job is read once the socket is subscribed (its topic is in the URL, so it is subscribed by the ``hello``): a
job that finished before the socket opened is seen by that read, and one that finishes later sends its event to
a socket already listening. Nothing can fall between the two.

The decisions (the deadline, which frame calls for a fresh read, the polling pace) are ``WaitPlan``'s, without I/O;
``wait_for_job`` carries them out with asyncio and ``wait_for_job_blocking`` with blocking sockets. The blocking one
never touches an event loop, so ``Client.wait`` works where a loop already runs in the thread (Jupyter, an
``async def``), which a private ``asyncio.run`` cannot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING

from websockets.asyncio import client as async_websocket
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync import client as sync_websocket

from engineroom.client.errors import WaitTimedOut
from engineroom.client.events import MAX_FRAME_BYTES
from engineroom.models.event import EventType
from engineroom.models.job import TERMINAL_STATES, JobPublic

if TYPE_CHECKING:
    from engineroom.client.async_client import AsyncClient
    from engineroom.client.config import ClientConfig
    from engineroom.client.sync_client import Client

logger = logging.getLogger(__name__)

#: How long ``wait`` waits unless told.
DEFAULT_WAIT_S = 300.0
#: Polling (the fallback) starts this often and slows down to the cap.
POLL_START_S = 0.2
POLL_CAP_S = 2.0
#: Events after which the job is read again: one of them ends it.
FINAL_EVENT_TYPES = frozenset({EventType.JOB_COMPLETED, EventType.JOB_FAILED, EventType.JOB_CANCELLED})
#: Why a socket may not open. A refused handshake too: a proxy without WebSockets, or a job that is not ours, which
#: the poll's GET then reports as the typed error it is.
OPEN_ERRORS = (OSError, InvalidHandshake, TimeoutError)


class _SocketUnavailable(Exception):
    """The WebSocket could not be opened or dropped: polling takes over."""


class WaitPlan:
    """One wait's decisions, made without I/O so that the asyncio and the blocking waits cannot drift apart."""

    def __init__(self, job_id: str, timeout_s: float) -> None:
        self.job_id = job_id
        self.timeout_s = timeout_s
        self._deadline = time.monotonic() + timeout_s
        self._poll_interval_s = POLL_START_S

    def ws_url(self, config: ClientConfig) -> str:
        return config.ws_url([f"job:{self.job_id}"])

    def remaining_s(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def is_final(self, message: str | bytes) -> bool:
        """Whether this frame says the job may have ended, so that it is read again."""
        frame = json.loads(message)
        return bool(frame.get("job_id") == self.job_id and frame.get("type") in FINAL_EVENT_TYPES)

    def fall_back(self, exc: _SocketUnavailable) -> None:
        logger.warning("waiting for %s: the WebSocket is unavailable (%s); polling instead", self.job_id, exc.__cause__)

    def timed_out(self, job: JobPublic | None = None) -> WaitTimedOut:
        state = f" (it is {job.state})" if job is not None else ""
        return WaitTimedOut(f"job {self.job_id} did not finish within {self.timeout_s:g} s{state}")

    def poll_delay_s(self, job: JobPublic) -> float:
        """Seconds to sleep before reading the unfinished ``job`` again, doubling up to ``POLL_CAP_S``.

        Raises:
          WaitTimedOut: the deadline has passed.
        """
        remaining_s = self.remaining_s()
        if remaining_s <= 0:
            raise self.timed_out(job)
        delay_s = min(self._poll_interval_s, remaining_s)
        self._poll_interval_s = min(self._poll_interval_s * 2, POLL_CAP_S)
        return delay_s


async def wait_for_job(client: AsyncClient, job_id: str, timeout_s: float) -> JobPublic:
    """The finished job.

    Raises:
      WaitTimedOut: still unfinished after ``timeout_s``.
      NotFound and the other errors of ``GET /jobs/{id}``.
    """
    plan = WaitPlan(job_id, timeout_s)
    try:
        async with asyncio.timeout(plan.remaining_s()):
            return await _hear_on_socket(client, plan)
    except _SocketUnavailable as exc:
        plan.fall_back(exc)
    except TimeoutError:
        raise plan.timed_out() from None
    while (job := await client.get(job_id)).state not in TERMINAL_STATES:
        await asyncio.sleep(plan.poll_delay_s(job))
    return job


async def _hear_on_socket(client: AsyncClient, plan: WaitPlan) -> JobPublic:
    try:
        socket = await async_websocket.connect(
            plan.ws_url(client.config), open_timeout=client.config.timeout_s, max_size=MAX_FRAME_BYTES
        )
    except OPEN_ERRORS as exc:
        raise _SocketUnavailable from exc
    async with socket:
        try:
            await socket.recv()  # the hello: the socket is subscribed from here on
            job = await client.get(plan.job_id)
            while job.state not in TERMINAL_STATES:
                if plan.is_final(await socket.recv()):
                    job = await client.get(plan.job_id)
            return job
        except ConnectionClosed as exc:
            raise _SocketUnavailable from exc


def wait_for_job_blocking(client: Client, job_id: str, timeout_s: float) -> JobPublic:
    """``wait_for_job`` on blocking sockets and ``time.sleep``, for ``Client``.

    Raises:
      WaitTimedOut: still unfinished after ``timeout_s``.
      NotFound and the other errors of ``GET /jobs/{id}``.
    """
    plan = WaitPlan(job_id, timeout_s)
    try:
        return _hear_on_blocking_socket(client, plan)
    except _SocketUnavailable as exc:
        plan.fall_back(exc)
    except TimeoutError:  # only ``recv`` raises it here: the deadline passed
        raise plan.timed_out() from None
    while (job := client.get(job_id)).state not in TERMINAL_STATES:
        time.sleep(plan.poll_delay_s(job))
    return job


def _hear_on_blocking_socket(client: Client, plan: WaitPlan) -> JobPublic:
    # Without an event loop to cancel it, each blocking step is given what is left of the deadline instead.
    try:
        socket = sync_websocket.connect(
            plan.ws_url(client.config),
            open_timeout=min(client.config.timeout_s, plan.remaining_s()),
            max_size=MAX_FRAME_BYTES,
        )
    except OPEN_ERRORS as exc:
        raise _SocketUnavailable from exc
    with socket:
        try:
            socket.recv(plan.remaining_s())  # the hello: the socket is subscribed from here on
            job = client.get(plan.job_id)
            while job.state not in TERMINAL_STATES:
                if plan.is_final(socket.recv(plan.remaining_s())):
                    job = client.get(plan.job_id)
            return job
        except ConnectionClosed as exc:
            raise _SocketUnavailable from exc
