"""WebSocket fan-out: which sockets are open, and which events each one may hear."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, defaultdict

from starlette.websockets import WebSocket, WebSocketDisconnect

from engineroom.models.event import Event
from engineroom.models.principal import Principal

logger = logging.getLogger(__name__)

#: Events buffered per socket; a client that falls this far behind is disconnected, never slowing others.
SEND_BUFFER_EVENTS = 1000
#: Event ids a gateway remembers to drop repeats.
RECENT_EVENT_IDS = 10_000
#: Close code for a client too slow to keep up (RFC 6455 1013: try again later).
CLOSE_TOO_SLOW = 1013


class ClientConnection:
    """One open socket: a bounded buffer and the task that drains it."""

    def __init__(self, websocket: WebSocket, principal: Principal) -> None:
        self.websocket = websocket
        self.principal = principal
        self._buffer: asyncio.Queue[Event] = asyncio.Queue(maxsize=SEND_BUFFER_EVENTS)
        self._sender = asyncio.create_task(self._drain(), name=f"ws-sender-{principal.user_id}")

    def may_hear(self, event: Event) -> bool:
        """Job events: only their own user, in their own tenant. Queue events: admins."""
        if event.audience == "admins":
            return self.principal.is_admin
        return event.tenant_id == self.principal.tenant_id and event.user_id == self.principal.user_id

    def offer(self, event: Event) -> None:
        try:
            self._buffer.put_nowait(event)
        except asyncio.QueueFull:
            logger.warning("client %s is too slow; disconnecting it", self.principal.user_id)
            self._sender.cancel()
            asyncio.create_task(self._close_too_slow())

    async def _close_too_slow(self) -> None:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await self.websocket.close(code=CLOSE_TOO_SLOW, reason="client too slow")

    async def _drain(self) -> None:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            while True:
                event = await self._buffer.get()
                await self.websocket.send_text(event.model_dump_json())

    async def close(self) -> None:
        self._sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sender


class RecentIds:
    """The last ``size`` ids seen, to drop repeats of at-least-once deliveries."""

    def __init__(self, size: int) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def seen(self, event_id: str) -> bool:
        """True if ``event_id`` was seen before; remembers it either way."""
        if event_id in self._ids:
            return True
        self._ids[event_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return False


class Hub:
    """Routes events from the bus to the sockets allowed to hear them. Lives on the gateway's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._by_user: dict[tuple[str, str], set[ClientConnection]] = defaultdict(set)
        self._recent = RecentIds(RECENT_EVENT_IDS)

    @property
    def connection_count(self) -> int:
        return sum(len(connections) for connections in self._by_user.values())

    def add(self, websocket: WebSocket, principal: Principal) -> ClientConnection:
        connection = ClientConnection(websocket, principal)
        self._by_user[(principal.tenant_id, principal.user_id)].add(connection)
        return connection

    async def remove(self, connection: ClientConnection) -> None:
        key = (connection.principal.tenant_id, connection.principal.user_id)
        self._by_user[key].discard(connection)
        if not self._by_user[key]:
            del self._by_user[key]
        await connection.close()

    def deliver_threadsafe(self, event: Event) -> None:
        """Called by the bus consumer thread: hands the event to the loop."""
        self._loop.call_soon_threadsafe(self.deliver, event)

    def deliver(self, event: Event) -> None:
        if self._recent.seen(event.id):
            return  # a re-published event (say, an outcome announced again after its worker died)
        if event.audience == "admins":
            candidates = [connection for connections in self._by_user.values() for connection in connections]
        elif event.user_id is not None:
            candidates = list(self._by_user.get((event.tenant_id, event.user_id), ()))
        else:
            return
        for connection in candidates:
            if connection.may_hear(event):
                connection.offer(event)
