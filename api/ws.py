"""``GET /ws``: authenticate, say hello, then stream the user's events and answer control frames."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from engineroom.core.config import Settings
from engineroom.core.errors import Unauthenticated
from engineroom.core.tokens import decode_token
from engineroom.models.principal import Principal
from engineroom.notifications.websocket import Hub

router = APIRouter(tags=["websocket"])

#: Sent as the accepted subprotocol when the token came as ``Sec-WebSocket-Protocol: bearer, <JWT>``.
BEARER_SUBPROTOCOL = "bearer"
#: Close code for a refused token when the server cannot answer the handshake with HTTP 401.
CLOSE_UNAUTHENTICATED = 4401


def _token_from(websocket: WebSocket) -> tuple[str | None, str | None]:
    """The token and the subprotocol to accept: ``?token=`` first, else ``bearer, <JWT>``."""
    protocols = websocket.scope.get("subprotocols", [])
    if BEARER_SUBPROTOCOL in protocols:
        index = protocols.index(BEARER_SUBPROTOCOL)
        token = protocols[index + 1] if index + 1 < len(protocols) else None
        return websocket.query_params.get("token", token), BEARER_SUBPROTOCOL
    return websocket.query_params.get("token"), None


async def _refuse(websocket: WebSocket, reason: str) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse({"detail": reason}, status_code=401))
    else:
        await websocket.close(code=CLOSE_UNAUTHENTICATED, reason=reason)


def _answer(frame: Any) -> dict[str, Any]:
    if not isinstance(frame, dict) or not isinstance(frame.get("op"), str):
        return {"type": "error", "detail": 'frames must be JSON objects with an "op"'}
    if frame["op"] == "ping":
        return {"type": "pong"}
    return {"type": "error", "detail": f"unknown op {frame['op']!r}"}


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
    await websocket.accept(subprotocol=subprotocol)
    await websocket.send_json({"type": "hello", "user": who.user_id, "tenant": who.tenant_id, "last_event_id": None})
    connection = hub.add(websocket, who)
    try:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                text = await websocket.receive_text()
                try:
                    frame = json.loads(text)
                except ValueError:
                    frame = None
                await websocket.send_json(_answer(frame))
    finally:
        await hub.remove(connection)
