"""The only place engineroom errors become HTTP responses."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from engineroom.core.errors import EngineroomError, RangeNotSatisfiable, RateLimited, Unauthenticated


class ErrorBody(BaseModel):
    """Every error answer: a sentence for the errors we raise, FastAPI's list of field errors for a body or
    parameter it could not validate (both are 422s)."""

    detail: str | list[dict[str, Any]]


#: The error answers any operation may give, documented once for the whole API. Listing 422 here also stops
#: FastAPI from documenting its own list-only 422 schema, which our sentence-shaped 422s (unknown task, a cycle)
#: would violate.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "A body that is not JSON, or a bad WebSocket handshake",
        401: "Missing, invalid or expired token",
        403: "Not allowed (admin only)",
        404: "Absent, or not yours",
        409: "Not in a state that allows this",
        413: "Body too large",
        422: "Invalid request: a sentence naming the problem, or the list of invalid fields",
        429: "Rate limited; see Retry-After",
        503: "MongoDB or RabbitMQ unreachable",
    }.items()
}


def error_response(exc: EngineroomError) -> JSONResponse:
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, RangeNotSatisfiable):
        headers["Content-Range"] = f"bytes */{exc.size_bytes}"
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


async def _handle_engineroom_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EngineroomError)  # registered for this class only
    return error_response(exc)


def install_error_handlers(app: FastAPI) -> None:
    # One handler for the whole family: Starlette resolves handlers along type(exc).__mro__.
    app.add_exception_handler(EngineroomError, _handle_engineroom_error)
