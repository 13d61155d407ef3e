"""``EventStream``: a topic's events as an async iterator that survives dropped connections.

After a drop it reconnects with ``/ws?after=<last id>&topics=<its topics>``; the gateway then replays every stored
event after that id before any live one, so nothing is missed. Ids already delivered are remembered (a bounded
window) and never yielded twice, so an overlap between replay and live delivery cannot repeat one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from engineroom.client.config import ClientConfig
from engineroom.client.errors import ApiUnreachable, error_for
from engineroom.core.backoff import compute_backoff_s
from engineroom.models.event import Event

logger = logging.getLogger(__name__)

#: Event ids remembered to drop repeats; the gateway replays at most 10,000 per resume.
SEEN_WINDOW = 10_000
#: Largest frame accepted: a job's result travels in its ``job.completed`` event.
MAX_FRAME_BYTES = 64 * 1024 * 1024
#: Handshake statuses that no reconnect can cure (bad token, forbidden or unknown topic, bad ``after``).
FINAL_STATUSES = frozenset({400, 401, 403, 404, 422})
#: Failed connection attempts in a row before giving up, and the backoff between them: patient enough to ride
#: out a gateway restart, like ``engineroom.js`` (0.5 s doubling to 30 s).
RECONNECT_ATTEMPTS = 10
RECONNECT_BASE_S = 0.5
RECONNECT_CAP_S = 30.0


class _SeenIds:
    """The last ``limit`` ids, for O(1) membership."""

    def __init__(self, limit: int) -> None:
        self._order: deque[str] = deque()
        self._ids: set[str] = set()
        self._limit = limit

    def add(self, event_id: str) -> bool:
        """Remember ``event_id``; ``False`` if it was already there."""
        if event_id in self._ids:
            return False
        self._order.append(event_id)
        self._ids.add(event_id)
        if len(self._order) > self._limit:
            self._ids.discard(self._order.popleft())
        return True


class EventStream:
    """``async for event in client.events(["job:<id>"])``: every event once, in order, across reconnects.

    Connection attempts back off exponentially; after ``RECONNECT_ATTEMPTS`` failed ones in a row it raises
    ``ApiUnreachable``. A refused token or topic raises its typed error (``Unauthenticated``, ``NotFound``...).
    """

    def __init__(self, config: ClientConfig, topics: Sequence[str], after: str | None = None) -> None:
        self.config = config
        self.topics = list(topics)
        #: Where a reconnect resumes: the last event yielded, or the position the first ``hello`` gave.
        self.last_event_id = after
        self._seen = _SeenIds(SEEN_WINDOW)
        self._socket: ClientConnection | None = None
        self._failures = 0
        self._closed = False
        #: Set when the gateway's replay was truncated: reconnecting resumes from the last id for the rest.
        self._resume_again = False

    @property
    def connection(self) -> ClientConnection | None:
        """The current socket, if one is open (to inspect it, or to drop it on purpose in a test)."""
        return self._socket

    async def open(self) -> None:
        """Connect now rather than at the first ``anext``: events from this moment on are then delivered, so a
        state read after ``open`` cannot miss a change."""
        if self._socket is None:
            await self._connect()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while not self._closed:
            socket = self._socket or await self._connect()
            try:
                frame: dict[str, Any] = json.loads(await socket.recv())
            except ConnectionClosed as exc:
                logger.info("event stream dropped (%s); resuming after %s", exc, self.last_event_id)
                self._socket = None
                continue
            event = self._take(frame)
            if event is not None:
                return event
            if self._resume_again:
                self._resume_again, self._socket = False, None
                await socket.close()
        raise StopAsyncIteration

    def _take(self, frame: dict[str, Any]) -> Event | None:
        """The event in ``frame`` if it is a new one; control frames update the stream instead."""
        kind = frame.get("type")
        if kind == "hello":
            self.last_event_id = self.last_event_id or frame.get("last_event_id")
        elif kind == "resumed" and frame.get("truncated"):
            self._resume_again = True
        elif kind == "error":
            logger.warning("event stream: the gateway refused a frame: %s", frame.get("detail"))
        elif "id" in frame and isinstance(kind, str) and "." in kind:
            event = Event.model_validate(frame)
            if self._seen.add(event.id):
                self.last_event_id = event.id
                return event
        return None

    async def _connect(self) -> ClientConnection:
        """A new socket resuming after ``last_event_id``, backing off between failed attempts.

        Raises:
          EngineroomError: the handshake was refused for good (see ``FINAL_STATUSES``).
          ApiUnreachable: ``RECONNECT_ATTEMPTS`` failures in a row.
        """
        while True:
            url = self.config.ws_url(self.topics, self.last_event_id)
            try:
                self._socket = await connect(url, open_timeout=self.config.timeout_s, max_size=MAX_FRAME_BYTES)
            except InvalidStatus as exc:
                response = exc.response
                if response.status_code in FINAL_STATUSES:
                    raise error_for(response.status_code, bytes(response.body or b""), dict(response.headers)) from exc
                self._fail(exc)
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                self._fail(exc)
            else:
                self._failures = 0
                return self._socket
            await asyncio.sleep(compute_backoff_s(self._failures, base_s=RECONNECT_BASE_S, cap_s=RECONNECT_CAP_S))

    def _fail(self, exc: Exception) -> None:
        self._failures += 1
        if self._failures >= RECONNECT_ATTEMPTS:
            raise ApiUnreachable(f"WebSocket /ws: {type(exc).__name__}: {exc}") from exc
        logger.warning("event stream: connecting failed (%s: %s); trying again", type(exc).__name__, exc)

    async def aclose(self) -> None:
        """Close the socket; iteration ends."""
        self._closed = True
        if self._socket is not None:
            await self._socket.close()
            self._socket = None

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()
