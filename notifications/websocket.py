"""WebSocket fan-out: which sockets are open, what each subscribed to, and resuming one without gap or repeat."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from engineroom.core.metrics import count_delivered
from engineroom.models.event import Event, EventType
from engineroom.models.principal import Principal
from engineroom.notifications.topics import Topic, routing_keys

logger = logging.getLogger(__name__)

#: Event ids a gateway remembers to drop repeats.
RECENT_EVENT_IDS = 10_000
#: Jobs a gateway remembers as ended, to drop their progress that arrives after the outcome.
RECENT_FINISHED_JOBS = 10_000
#: Event ids each socket remembers, so a replay never repeats what it just sent live, nor live what it replayed.
RECENT_IDS_PER_SOCKET = 512
#: Close code for a client too slow to keep up (RFC 6455 1013: try again later).
CLOSE_TOO_SLOW = 1013

#: Reads the stored events after an id under some routing keys: (events, more exist).
ReplaySource = Callable[[list[str], str], Awaitable[tuple[list[Event], bool]]]
#: How uvicorn refuses a frame for a socket that has closed (its client went away, or we closed it).
_SERVER_SAYS_CLOSED = "after sending 'websocket.close'"


def _closed_already(error: RuntimeError) -> bool:
    """Whether ``error`` only says the socket had closed before a send or close: Starlette's refusal after our own
    close, or the server's after the connection ended. Any other ``RuntimeError`` is a fault."""
    return isinstance(error, WebSocketDisconnected) or _SERVER_SAYS_CLOSED in str(error)


class RecentIds:
    """The last ``size`` ids seen, to drop repeats of at-least-once deliveries."""

    def __init__(self, size: int) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def seen(self, event_id: str) -> bool:
        """True if ``event_id`` was seen before; remembers it either way."""
        if event_id in self._ids:
            return True
        self.remember(event_id)
        return False

    def remember(self, event_id: str) -> None:
        self._ids[event_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)

    def forget(self, event_id: str) -> None:
        self._ids.pop(event_id, None)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids


class FinishedJobs:
    """Jobs whose outcome this gateway delivered last, so that their late progress is dropped.

    A worker publishes progress without waiting, and it learns of a cancel only from the bus: a progress event it
    sent a moment before (or a slow publish) can reach the gateway after ``job.cancelled`` from another process.
    A browser must not see a job move after it ended. A job that starts over (an operator's retry) moves again.
    """

    OUTCOMES = frozenset({EventType.JOB_COMPLETED, EventType.JOB_FAILED, EventType.JOB_CANCELLED})
    STARTS_OVER = frozenset(
        {EventType.JOB_PENDING, EventType.JOB_SCHEDULED, EventType.JOB_QUEUED, EventType.JOB_RETRYING}
    )

    def __init__(self, size: int) -> None:
        self._ended = RecentIds(size)

    def is_late(self, event: Event) -> bool:
        """True for the progress of a job whose outcome came first; notes outcomes and restarts as they pass."""
        job_id = event.job_id
        if job_id is None:
            return False
        if event.type in self.OUTCOMES:
            self._ended.remember(job_id)
        elif event.type in self.STARTS_OVER:
            self._ended.forget(job_id)
        elif event.type is EventType.JOB_PROGRESS:
            return job_id in self._ended
        return False


class ClientConnection:
    """One open socket: its topics, a bounded buffer of outgoing frames, and the task that drains it."""

    def __init__(self, websocket: WebSocket, principal: Principal, *, buffer_frames: int) -> None:
        self.websocket = websocket
        self.principal = principal
        self.topics: dict[str, Topic] = {}
        self._buffer: asyncio.Queue[str] = asyncio.Queue(maxsize=buffer_frames)
        self._recent = RecentIds(RECENT_IDS_PER_SOCKET)
        #: Live events that arrive while a replay is read; ``None`` when no replay runs.
        self._held: list[Event] | None = None
        self._closing = False
        self._sender = asyncio.create_task(self._drain(), name=f"ws-sender-{principal.user_id}")

    def routing_keys(self) -> set[str]:
        return {topic.routing_key(self.principal) for topic in self.topics.values()}

    def wants(self, event: Event) -> bool:
        return any(topic.covers(event, self.principal) for topic in self.topics.values())

    def offer(self, event: Event, frame: str) -> None:
        """Queue a live event (``frame``: it as JSON, made once for every socket) without waiting; a full buffer
        disconnects this client, never slows the hub."""
        if self._held is not None:
            self._held.append(event)
            if len(self._held) > self._buffer.maxsize:
                self._too_slow()
            return
        if self._recent.seen(event.id):
            return
        try:
            self._buffer.put_nowait(frame)
        except asyncio.QueueFull:
            self._too_slow()

    async def send(self, frame: dict[str, Any]) -> None:
        """Queue a reply, after the frames queued before it (waits while the buffer is full)."""
        await self._put(json.dumps(frame, separators=(",", ":")))

    def hold(self) -> None:
        """Keep live events back until the next ``resume`` has sent the replay (call before any ``await``, right
        after connecting, so no live event can overtake older replayed ones)."""
        if self._held is None:
            self._held = []

    async def resume(self, after: str, replay: ReplaySource) -> None:
        """Send the stored events after ``after`` that this socket's topics cover, then go on live.

        Live events are held from before the store is read until the replay is sent, so each event is either
        replayed or sent live; one that is both (recorded before the read, published after) is sent once.
        """
        self.hold()
        try:
            stored, more = await replay(sorted(self.routing_keys()), after)
            replayed = 0
            for event in stored:
                replayed += await self._send_event(event)
            while self._held:  # events kept arriving while the replay was sent
                held, self._held = sorted(self._held, key=lambda event: event.id), []
                for event in held:
                    await self._send_event(event)
        finally:
            self._held = None
        await self.send({"type": "resumed", "after": after, "replayed": replayed, "truncated": more})

    async def _send_event(self, event: Event) -> int:
        if not self.wants(event) or self._recent.seen(event.id):
            return 0
        await self._put(event.model_dump_json())
        return 1

    async def _put(self, frame: str) -> None:
        if not self._closing:
            await self._buffer.put(frame)

    def _too_slow(self) -> None:
        if self._closing:
            return
        self._closing = True
        logger.warning("client %s is too slow; disconnecting it", self.principal.user_id)
        self._sender.cancel()
        while not self._buffer.empty():  # wakes a replay waiting for room, which then stops at ``_closing``
            self._buffer.get_nowait()
        asyncio.create_task(self._close_too_slow())

    async def _close_too_slow(self) -> None:
        with self._unless_closed("closing"):
            await self.websocket.close(code=CLOSE_TOO_SLOW, reason="client too slow")

    async def _drain(self) -> None:
        with self._unless_closed("sending"):
            while True:
                await self.websocket.send_text(await self._buffer.get())

    @contextlib.contextmanager
    def _unless_closed(self, doing: str) -> Iterator[None]:
        """A socket that closed (its client left, or we closed it) ends the block quietly; any other failure is
        logged with its traceback (a background task's failure would otherwise go unseen)."""
        try:
            yield
        except WebSocketDisconnect:
            pass
        except RuntimeError as exc:
            if not _closed_already(exc):
                logger.exception("%s on the socket of %s failed", doing, self.principal.user_id)

    async def close(self) -> None:
        self._sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sender


class Hub:
    """Routes events from the bus to the sockets whose topics cover them. Lives on the gateway's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, buffer_frames: int) -> None:
        self._loop = loop
        self._buffer_frames = buffer_frames
        self._connections: set[ClientConnection] = set()
        self._by_key: dict[str, set[ClientConnection]] = defaultdict(set)
        self._recent = RecentIds(RECENT_EVENT_IDS)
        self._finished = FinishedJobs(RECENT_FINISHED_JOBS)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def add(self, websocket: WebSocket, principal: Principal, topics: Iterable[Topic]) -> ClientConnection:
        connection = ClientConnection(websocket, principal, buffer_frames=self._buffer_frames)
        self._connections.add(connection)
        self.subscribe(connection, topics)
        return connection

    def subscribe(self, connection: ClientConnection, topics: Iterable[Topic]) -> None:
        for topic in topics:
            connection.topics[str(topic)] = topic
            self._by_key[topic.routing_key(connection.principal)].add(connection)

    def unsubscribe(self, connection: ClientConnection, topics: Iterable[Topic]) -> None:
        before = connection.routing_keys()
        for topic in topics:
            connection.topics.pop(str(topic), None)
        for key in before - connection.routing_keys():
            self._forget(key, connection)

    def _forget(self, key: str, connection: ClientConnection) -> None:
        holders = self._by_key.get(key)
        if holders is not None:
            holders.discard(connection)
            if not holders:
                del self._by_key[key]

    async def remove(self, connection: ClientConnection) -> None:
        self._connections.discard(connection)
        for key in connection.routing_keys():
            self._forget(key, connection)
        await connection.close()

    def deliver_threadsafe(self, event: Event) -> None:
        """Called by the bus consumer thread: hands the event to the loop."""
        self._loop.call_soon_threadsafe(self.deliver, event)

    def deliver(self, event: Event) -> None:
        if self._recent.seen(event.id):
            return  # a re-published event (say, an outcome announced again after its worker died)
        if self._finished.is_late(event):
            return
        candidates: set[ClientConnection] = set()
        for key in routing_keys(event):
            candidates.update(self._by_key.get(key, ()))
        frame: str | None = None
        for connection in candidates:
            if connection.wants(event):
                frame = frame or event.model_dump_json()
                connection.offer(event, frame)
                count_delivered(event.type)
