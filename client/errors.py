"""HTTP answers become the same typed errors the gateway raised (``core/errors.py``), with the server's detail.

The client reuses the server's hierarchy so ``except NotFound`` reads the same on both sides; only what exists
on the client alone (the gateway unreachable, a wait that ran out) is defined here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from engineroom.core.errors import (
    Conflict,
    EngineroomError,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    Unauthenticated,
)

#: The error each status the gateway documents (DESIGN.md, "Errors") becomes.
ERRORS_BY_STATUS: dict[int, type[EngineroomError]] = {
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidRequest,
    503: ServiceUnavailable,
}
#: ``Retry-After`` to assume when a 429 comes without one.
DEFAULT_RETRY_AFTER_S = 1.0


class ApiUnreachable(EngineroomError):
    """The gateway could not be reached (connection refused, reset, timed out) after the bounded retries."""

    detail = "the engineroom API is unreachable"


class UnexpectedStatus(EngineroomError):
    """A status the API does not document (a proxy's 502, a 500): ``status_code`` is the one received."""

    def __init__(self, status_code: int, detail: str) -> None:
        self.status_code = status_code
        super().__init__(detail)


class DownloadCorrupted(EngineroomError):
    """A downloaded artifact's SHA-256 is not the one the server announced (its ``ETag``); the file was removed."""

    detail = "the downloaded file does not match its SHA-256"


class WaitTimedOut(EngineroomError, TimeoutError):
    """``wait`` ran out of time before the job finished; the job itself goes on."""

    detail = "the job did not finish in time"


def describe_detail(detail: Any) -> str:
    """FastAPI's ``detail``: a string from our errors, a list of ``{loc, msg}`` from request validation."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = [_describe_item(item) for item in detail]
        return "; ".join(parts) if parts else "invalid request"
    return json.dumps(detail)


def _describe_item(item: Any) -> str:
    if isinstance(item, dict) and "msg" in item:
        location = ".".join(str(part) for part in item.get("loc", []))
        return f"{location}: {item['msg']}" if location else str(item["msg"])
    return json.dumps(item)


def error_for(status_code: int, body: bytes, headers: Mapping[str, str]) -> EngineroomError:
    """The typed error for an error answer."""
    headers = {name.lower(): value for name, value in headers.items()}
    try:
        detail = describe_detail(json.loads(body)["detail"])
    except (ValueError, KeyError, TypeError):
        detail = body.decode(errors="replace")[:500] or f"HTTP {status_code}"
    if status_code == 429:
        return RateLimited(_retry_after_s(headers), detail)
    error_class = ERRORS_BY_STATUS.get(status_code)
    if error_class is None:
        return UnexpectedStatus(status_code, detail)
    return error_class(detail)


def _retry_after_s(headers: Mapping[str, str]) -> float:
    try:
        return float(headers.get("retry-after", DEFAULT_RETRY_AFTER_S))
    except ValueError:  # an HTTP date: we never send one, a proxy might
        return DEFAULT_RETRY_AFTER_S
