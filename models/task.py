"""What ``GET /tasks`` shows about a registered task."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class TaskInfo(BaseModel):
    name: str
    engine: str
    description: str | None = None
    max_retries: int
    timeout_s: float | None
    payload_schema: dict[str, Any]
