"""``/healthz`` (the process is alive) and ``/readyz`` (it can reach MongoDB and RabbitMQ)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from engineroom.core.errors import EngineroomError
from engineroom.messaging.broker import Enqueuer
from engineroom.store.client import Database, ping

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: answers while the process runs."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Readiness: 200 when MongoDB and RabbitMQ answer, else 503 naming the one that does not."""
    db: Database = request.app.state.db
    enqueuer: Enqueuer = request.app.state.enqueuer
    checks: dict[str, str] = {}
    for name, check in (("mongodb", ping(db)), ("rabbitmq", enqueuer.ping())):
        try:
            await check
            checks[name] = "ok"
        except EngineroomError as exc:
            checks[name] = exc.detail
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )
