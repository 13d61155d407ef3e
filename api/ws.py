"""``GET /ws``: authenticate, say hello, stream the events of the socket's topics, and answer its frames:
``subscribe``, ``unsubscribe``, ``resume`` and ``ping`` (DESIGN.md, "WebSocket").

A reconnecting client should resume in the URL (``/ws?token=...&after=<last id>&topics=<its topics>``): the
replay then comes before any live event and covers the topics it had. A ``resume`` frame works too, but
live events sent between the hello and that frame come before the older replayed ones.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from engineroom.core.config import Settings
from engineroom.core.errors import EngineroomError, Forbidden, Unauthenticated
from engineroom.core.ids import is_valid_id, new_id
from engineroom.models.event import Event
from engineroom.models.principal import Principal
from engineroom.notifications.topics import ADMIN_DEFAULT_TOPICS, DEFAULT_TOPICS, MAX_TOPICS, InvalidTopic, Topic
from engineroom.notifications.websocket import ClientConnection, Hub
from engineroom.services.tokens import decode_token
from engineroom.store.events import EventStore
from engineroom.store.jobs import JobStore
from engineroom.store.workflows import WorkflowStore

router = APIRouter(tags=["websocket"])

#: Sent as the accepted subprotocol when the token came as ``Sec-WebSocket-Protocol: bearer, <JWT>``.
BEARER_SUBPROTOCOL = "bearer"
#: Close code for a refused token when the server cannot answer the handshake with HTTP 401.
CLOSE_UNAUTHENTICATED = 4401
#: Close code for a refused handshake other than a bad token (RFC 6455 1008: policy violation).
CLOSE_POLICY = 1008
#: Largest client frame read; control frames are tiny.
MAX_FRAME_CHARS = 64 * 1024
#: Most events one ``resume`` replays; beyond that the reply says ``truncated`` and the client resumes again
#: from the last id it got (or reloads state over REST).
MAX_REPLAY_EVENTS = 10_000


class FrameError(Exception):
    """A client frame we answer with an ``error`` frame; the socket stays open."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _token_from(websocket: WebSocket) -> tuple[str | None, str | None]:
    """The token and the subprotocol to accept: ``?token=`` first, else ``bearer, <JWT>``."""
    protocols = websocket.scope.get("subprotocols", [])
    if BEARER_SUBPROTOCOL in protocols:
        index = protocols.index(BEARER_SUBPROTOCOL)
        token = protocols[index + 1] if index + 1 < len(protocols) else None
        return websocket.query_params.get("token", token), BEARER_SUBPROTOCOL
    return websocket.query_params.get("token"), None


async def _refuse(websocket: WebSocket, reason: str, *, status_code: int = 401) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse({"detail": reason}, status_code=status_code))
    else:
        await websocket.close(code=CLOSE_UNAUTHENTICATED if status_code == 401 else CLOSE_POLICY, reason=reason)


def _parse(text: str) -> dict[str, Any]:
    if len(text) > MAX_FRAME_CHARS:
        raise FrameError(f"frames are at most {MAX_FRAME_CHARS} characters")
    try:
        frame = json.loads(text)
    except ValueError:
        raise FrameError("frames must be JSON") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("op"), str):
        raise FrameError('frames must be JSON objects with an "op"')
    return frame


def parse_topics(topics: list[Any]) -> list[Topic]:
    try:
        return [Topic.parse(topic) for topic in topics]
    except InvalidTopic as exc:
        raise FrameError(str(exc)) from None


async def check_access(topics: list[Topic], who: Principal, jobs: JobStore, workflows: WorkflowStore) -> None:
    """Refuse all the topics if one is not the caller's; absent and not-yours read the same.

    Raises:
      NotFound: a job or workflow the caller may not see.
      Forbidden: a queue topic for someone who is not an admin.
    """
    for topic in topics:
        if topic.kind == "job":
            await jobs.get_visible(topic.target, who)
        elif topic.kind == "workflow":
            await workflows.get_visible(topic.target, who)
        elif topic.kind in ("queue", "tenant") and not who.is_admin:
            raise Forbidden(f"{topic.kind} topics are for admins")


async def _topics_asked(websocket: WebSocket, who: Principal) -> list[Topic]:
    """The socket's first topics: ``?topics=a,b`` (a reconnecting client's own) or the defaults.

    Raises:
      FrameError, NotFound, Forbidden: as for a ``subscribe`` frame.
    """
    asked = websocket.query_params.get("topics")
    if asked is None:
        return [Topic.parse(topic) for topic in (ADMIN_DEFAULT_TOPICS if who.is_admin else DEFAULT_TOPICS)]
    names = [name for name in asked.split(",") if name]
    if len(names) > MAX_TOPICS:
        raise FrameError(f"a socket holds at most {MAX_TOPICS} topics")
    topics = parse_topics(names)
    state = websocket.app.state
    await check_access(topics, who, state.jobs, state.workflow_store)
    return topics


@dataclass
class SocketSession:
    """Answers one socket's frames; the access checks behind topics live here."""

    connection: ClientConnection
    hub: Hub
    jobs: JobStore
    workflows: WorkflowStore
    events: EventStore

    @property
    def who(self) -> Principal:
        return self.connection.principal

    async def answer(self, frame: dict[str, Any]) -> None:
        op = frame["op"]
        if op == "ping":
            await self.connection.send({"type": "pong"})
        elif op in ("subscribe", "unsubscribe"):
            topics = self._topics(frame)
            if op == "subscribe":
                await check_access(topics, self.who, self.jobs, self.workflows)
                if len(self.connection.topics.keys() | {str(topic) for topic in topics}) > MAX_TOPICS:
                    raise FrameError(f"a socket holds at most {MAX_TOPICS} topics")
                self.hub.subscribe(self.connection, topics)
            else:
                self.hub.unsubscribe(self.connection, topics)
            await self.connection.send({"type": f"{op}d", "topics": sorted(self.connection.topics)})
        elif op == "resume":
            after = frame.get("after")
            if not isinstance(after, str) or not is_valid_id(after):
                raise FrameError('"after" must be an event id')
            await self.connection.resume(after, self._replay)
        else:
            raise FrameError(f"unknown op {op[:40]!r}; use subscribe, unsubscribe, resume or ping")

    @staticmethod
    def _topics(frame: dict[str, Any]) -> list[Topic]:
        topics = frame.get("topics")
        if not isinstance(topics, list) or not topics or len(topics) > MAX_TOPICS:
            raise FrameError(f'"topics" must be a list of 1 to {MAX_TOPICS} topics')
        return parse_topics(topics)

    async def _replay(self, routing_keys: list[str], after: str) -> tuple[list[Event], bool]:
        return await self.events.after(routing_keys, after, limit=MAX_REPLAY_EVENTS)


@router.websocket("/ws")
async def events_socket(websocket: WebSocket) -> None:
    settings: Settings = websocket.app.state.settings
    hub: Hub = websocket.app.state.hub
    token, subprotocol = _token_from(websocket)
    try:
        if token is None:
            raise Unauthenticated("missing token")
        who: Principal = decode_token(settings, token)
    except Unauthenticated as exc:
        await _refuse(websocket, exc.detail)
        return
    after = websocket.query_params.get("after")
    if after is not None and not is_valid_id(after):
        await _refuse(websocket, '"after" must be an event id', status_code=400)
        return
    try:
        topics = await _topics_asked(websocket, who)
    except FrameError as exc:
        await _refuse(websocket, exc.detail, status_code=400)
        return
    except EngineroomError as exc:
        await _refuse(websocket, exc.detail, status_code=exc.status_code)
        return
    await websocket.accept(subprotocol=subprotocol)
    connection = hub.add(websocket, who, topics)
    if after is not None:
        connection.hold()  # before any await: no live event may overtake the replay
    state = websocket.app.state
    session = SocketSession(connection, hub, state.jobs, state.workflow_store, state.events)
    # ``last_event_id`` is a position, not an event: resuming after it replays what this socket misses from now.
    hello = {"type": "hello", "user": who.user_id, "tenant": who.tenant_id, "last_event_id": new_id()}
    await connection.send({**hello, "topics": sorted(connection.topics)})
    try:
        if after is not None:
            await session.answer({"op": "resume", "after": after})
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                text = await websocket.receive_text()
                frame: dict[str, Any] = {}
                try:
                    frame = _parse(text)
                    await session.answer(frame)
                except (FrameError, EngineroomError) as exc:  # EngineroomError: say, MongoDB down during a resume
                    await connection.send({"type": "error", "op": frame.get("op"), "detail": exc.detail})
    finally:
        await hub.remove(connection)
