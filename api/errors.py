"""The only place engineroom errors become HTTP responses."""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from engineroom.core.errors import EngineroomError, RateLimited, Unauthenticated


def error_response(exc: EngineroomError) -> JSONResponse:
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


async def _handle_engineroom_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EngineroomError)  # registered for this class only
    return error_response(exc)


def install_error_handlers(app: FastAPI) -> None:
    # One handler for the whole family: Starlette resolves handlers along type(exc).__mro__.
    app.add_exception_handler(EngineroomError, _handle_engineroom_error)
