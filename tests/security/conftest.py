"""One in-process gateway per security module, and a victim's resources on it: alice of acme owns a finished job
with an artifact (``image.png``), a workflow, a schedule and notifications; the intruders are bob (acme, not an
admin) and eve (globex, an admin)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_token
from tests.gateway import in_process_gateway, own_database_settings

#: Seconds the victim's job and notifications may take to appear.
SETUP_TIMEOUT_S = 20.0


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class Victim:
    token: str
    #: Path parameter name -> alice's resource of that kind (``engine`` is shared by everyone).
    ids: dict[str, str]

    @property
    def secrets(self) -> list[str]:
        """Strings that must never appear in an intruder's answer (an engine and a file name are no secrets: the
        task list names both)."""
        return [value for name, value in self.ids.items() if name not in ("engine", "name")]


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + SETUP_TIMEOUT_S
    while not (value := condition()):
        assert time.monotonic() < deadline, f"no {what} after {SETUP_TIMEOUT_S} s"
        time.sleep(0.05)
    return value


@pytest.fixture(scope="module")
def gateway(mongodb_url: str) -> Iterator[TestClient]:
    with in_process_gateway(own_database_settings("security", mongodb_url)) as client:
        yield client


@pytest.fixture(scope="module")
def victim(gateway: TestClient) -> Victim:
    token = make_token("alice", "acme")
    headers = bearer(token)
    demo = {"task": "image_generation.demo", "payload": {"duration_s": 0, "width": 8, "height": 8}}
    job = gateway.post("/jobs", json=demo, headers=headers).json()
    workflow = gateway.post(
        "/workflows",
        json={"steps": [{"id": "a", "task": "general.demo", "payload": {"duration_s": 0}}]},
        headers=headers,
    ).json()
    schedule = gateway.post("/schedules", json={"task": "general.demo", "cron": "0 0 1 1 *"}, headers=headers).json()
    wait_for(lambda: gateway.get(f"/jobs/{job['id']}", headers=headers).json()["state"] == "completed", "completion")
    notification = wait_for(lambda: gateway.get("/notifications", headers=headers).json()["items"], "notification")[0]
    ids = {
        "job_id": job["id"],
        "workflow_id": workflow["id"],
        "schedule_id": schedule["id"],
        "notification_id": notification["id"],
        "name": "image.png",  # the artifact of alice's job
        "engine": "general",
    }
    return Victim(token, ids)


@pytest.fixture(scope="module")
def intruders() -> dict[str, str]:
    """Who tries: another user of the victim's tenant, and an admin of another tenant."""
    return {"bob@acme": make_token("bob", "acme"), "eve@globex (admin)": make_token("eve", "globex", admin=True)}
