"""``GET /workers``: admins see live processes from their heartbeats (here the scheduler on the gateway's loop)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient

TokenFor = Callable[..., str]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait_for_workers(client: TestClient, token: str, kind: str) -> list[Any]:
    deadline = time.monotonic() + 10
    while True:
        listed = client.get("/workers", headers=auth(token)).json()
        if any(process["kind"] == kind for process in listed):
            return list(listed)
        assert time.monotonic() < deadline, f"no {kind} listed: {listed}"
        time.sleep(0.05)


def test_admins_see_the_scheduler_leading(client: TestClient, token_for: TokenFor) -> None:
    listed = wait_for_workers(client, token_for("root", "acme", admin=True), "scheduler")
    (scheduler,) = [process for process in listed if process["kind"] == "scheduler"]
    assert scheduler["leader"] is True
    assert scheduler["pid"] > 0 and scheduler["host"]
    # As instants: ISO strings do not order (a whole second is written without its fraction)
    assert datetime.fromisoformat(scheduler["last_heartbeat"]) >= datetime.fromisoformat(scheduler["started_at"])
    assert "expires_at" not in scheduler


def test_only_admins_may_list_workers(client: TestClient, token_for: TokenFor) -> None:
    assert client.get("/workers").status_code == 401
    assert client.get("/workers", headers=auth(token_for("alice", "acme"))).status_code == 403
