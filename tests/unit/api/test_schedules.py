"""Cron schedules through the gateway, with the scheduler and a worker in process.

A real tick is up to a minute away, so tests that watch a schedule fire move its ``next_fire_at`` to now (or the
past) through ``ScheduleStore.claim_tick`` — the scheduler's own conditional write — on the app's event loop, and
use a yearly expression so that no real tick can fire during the test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from engineroom.core.clock import utcnow
from engineroom.core.ids import new_id
from engineroom.models.principal import Principal
from engineroom.models.schedule import MissedTicks, ScheduleDocument
from engineroom.scheduler.schedules import ScheduleFirer
from engineroom.services.submission import JobSubmitter
from engineroom.store.schedules import ScheduleStore

TokenFor = Callable[..., str]
ALICE = Principal(user_id="alice", tenant_id="acme")
#: Fires on New Year only: a test sets the tick it wants by hand.
YEARLY = "0 0 1 1 *"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create(client: TestClient, token: str, **body: Any) -> dict[str, Any]:
    fields = {"task": "general.demo", "cron": YEARLY, "payload": {"duration_s": 0}, **body}
    response = client.post("/schedules", json=fields, headers=auth(token))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def state(client: TestClient) -> Any:
    app = client.app
    assert isinstance(app, FastAPI)
    return app.state


def set_next_fire_at(client: TestClient, schedule_id: str, at: datetime) -> None:
    """Make the schedule due at ``at`` with the scheduler's own conditional write, as a claim firing nothing."""
    store: ScheduleStore = state(client).schedules

    async def move() -> None:
        current = await store.get_visible(schedule_id, ALICE)
        assert await store.claim_tick(schedule_id, expected=current.next_fire_at, next_fire_at=at, tick=None, now=at)

    client.portal.call(move)  # type: ignore[union-attr]


def jobs_of(client: TestClient, token: str, schedule_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get("/jobs", params={"limit": 200}, headers=auth(token)).json()["items"]
    return [job for job in items if job["metadata"].get("schedule_id") == schedule_id]


def wait_for_jobs(client: TestClient, token: str, schedule_id: str, count: int) -> list[dict[str, Any]]:
    """The schedule's jobs once there are ``count``, after a few more scheduler sweeps to catch a duplicate."""
    deadline = time.monotonic() + 10
    while len(jobs := jobs_of(client, token, schedule_id)) < count:
        assert time.monotonic() < deadline, f"{len(jobs)} of {count} jobs"
        time.sleep(0.05)
    time.sleep(0.3)  # six sweeps at the test interval: long enough for a double fire to show
    return jobs_of(client, token, schedule_id)


def wait_until_settled(client: TestClient, token: str, schedule_id: str) -> dict[str, Any]:
    """The schedule once the scheduler has moved it past now and recorded its tick's outcome."""
    deadline = time.monotonic() + 10
    while True:
        schedule: dict[str, Any] = client.get(f"/schedules/{schedule_id}", headers=auth(token)).json()
        if datetime.fromisoformat(schedule["next_fire_times"][0]) > datetime.now(UTC):
            return schedule
        assert time.monotonic() < deadline, schedule
        time.sleep(0.05)


# -- the resource ---------------------------------------------------------------------------------------------------


def test_a_created_schedule_shows_its_next_five_fire_times_in_its_timezone(
    client: TestClient, token_for: TokenFor
) -> None:
    token = token_for("alice", "acme")
    created = create(
        client, token, cron="0 9 * * mon-fri", timezone="Europe/Berlin", name="standup", tags=["daily"], priority=8
    )
    assert (created["user_id"], created["tenant_id"], created["name"]) == ("alice", "acme", "standup")
    assert (created["paused"], created["missed"], created["priority"]) == (False, "skip", 8)
    assert created["last_fired_at"] is None
    times = [datetime.fromisoformat(value) for value in created["next_fire_times"]]
    assert len(times) == 5 and times == sorted(times) and times[0] > datetime.now(UTC)
    for fire_time in times:
        wall = fire_time.astimezone(ZoneInfo("Europe/Berlin"))
        assert (wall.hour, wall.minute) == (9, 0) and wall.weekday() < 5
    assert client.get(f"/schedules/{created['id']}", headers=auth(token)).json() == created
    assert client.get("/schedules", headers=auth(token)).json() == {"items": [created], "next_cursor": None}


@pytest.mark.parametrize(
    ("cron", "stored", "minute", "hour"),
    [
        ("0-0 * * * *", "0 * * * *", 0, None),
        ("5-5 * * * *", "5 * * * *", 5, None),
        ("30 3-3 * * *", "30 3 * * *", 30, 3),
    ],
)
def test_a_range_of_one_value_is_stored_as_that_value_and_fires_on_it_only(
    client: TestClient, token_for: TokenFor, cron: str, stored: str, minute: int, hour: int | None
) -> None:
    # croniter 7.0.0 alone reads "5-5" as "*": this schedule would fire every minute (issue 16)
    created = create(client, token_for(), cron=cron)
    assert created["cron"] == stored
    times = [datetime.fromisoformat(value) for value in created["next_fire_times"]]
    gap = timedelta(hours=1) if hour is None else timedelta(days=1)
    assert all(later - earlier == gap for earlier, later in zip(times, times[1:], strict=False)), times
    assert all(time.minute == minute and hour in (None, time.hour) for time in times), times


@pytest.mark.parametrize(
    ("body", "detail_part"),
    [
        ({"cron": "* * * *"}, "has 4 field(s); give 5"),
        ({"cron": "0 25 * * *"}, "out of range"),
        ({"cron": "0 0 31 2 *"}, "never fires"),
        ({"cron": "H * * * *"}, "random (R) and hashed (H)"),
        ({"cron": "0 0 * * 7-0"}, "day-of-week range '7-0' runs from Sunday back to Sunday"),
        ({"cron": "0 0 0-0 * *"}, "out of range"),
        ({"timezone": "Mars/Olympus_Mons"}, "unknown timezone 'Mars/Olympus_Mons'"),
        ({"task": "general.nope"}, "unknown task 'general.nope'"),
        ({"payload": {"duration_s": "soon"}}, "invalid payload for general.demo: duration_s"),
        ({"payload": {"colour": "red"}}, "invalid payload for general.demo: colour"),
        ({"missed": "all"}, "'skip' or 'run_once'"),
        ({"every": "minute"}, "Extra inputs"),
        ({"priority": 11}, "less than or equal to 10"),
    ],
)
def test_a_bad_schedule_gets_a_422_naming_the_problem(
    client: TestClient, token_for: TokenFor, body: dict[str, Any], detail_part: str
) -> None:
    fields = {"task": "general.demo", "cron": "*/5 * * * *", **body}
    response = client.post("/schedules", json=fields, headers=auth(token_for()))
    assert response.status_code == 422
    assert detail_part in str(response.json()["detail"])


def test_another_users_or_tenants_schedule_is_not_found(client: TestClient, token_for: TokenFor) -> None:
    alice = token_for("alice", "acme")
    schedule_id = create(client, alice)["id"]
    for stranger in (token_for("bob", "acme"), token_for("alice", "evil"), token_for("root", "evil", admin=True)):
        assert client.get("/schedules", headers=auth(stranger)).json()["items"] == []
        for method, path in (
            ("GET", f"/schedules/{schedule_id}"),
            ("POST", f"/schedules/{schedule_id}/pause"),
            ("POST", f"/schedules/{schedule_id}/resume"),
            ("DELETE", f"/schedules/{schedule_id}"),
        ):
            response = client.request(method, path, headers=auth(stranger))
            assert response.status_code == 404 and response.json() == {"detail": f"schedule {schedule_id} not found"}
    admin = token_for("root", "acme", admin=True)
    assert [item["id"] for item in client.get("/schedules", headers=auth(admin)).json()["items"]] == [schedule_id]
    assert client.get(f"/schedules/{schedule_id}", headers=auth(alice)).json()["paused"] is False
    assert client.get("/schedules/not-an-id", headers=auth(alice)).status_code == 422


def test_pause_empties_the_fire_times_and_resume_restarts_from_now(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    schedule_id = create(client, token, cron="*/10 * * * *")["id"]
    paused = client.post(f"/schedules/{schedule_id}/pause", headers=auth(token)).json()
    assert paused["paused"] is True and paused["next_fire_times"] == []
    assert client.post(f"/schedules/{schedule_id}/pause", headers=auth(token)).status_code == 200
    resumed = client.post(f"/schedules/{schedule_id}/resume", headers=auth(token)).json()
    times = [datetime.fromisoformat(value) for value in resumed["next_fire_times"]]
    assert resumed["paused"] is False and len(times) == 5
    assert datetime.now(UTC) < times[0] <= datetime.now(UTC) + timedelta(minutes=10) and times[0].minute % 10 == 0
    assert client.post(f"/schedules/{schedule_id}/resume", headers=auth(token)).json() == resumed


def test_a_deleted_schedule_is_gone(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    schedule_id = create(client, token)["id"]
    assert client.delete(f"/schedules/{schedule_id}", headers=auth(token)).status_code == 204
    assert client.get(f"/schedules/{schedule_id}", headers=auth(token)).status_code == 404
    assert client.delete(f"/schedules/{schedule_id}", headers=auth(token)).status_code == 404


def test_listing_pages_with_a_cursor(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    ids = [create(client, token, name=f"s{n}")["id"] for n in range(3)]
    first = client.get("/schedules", params={"limit": 2}, headers=auth(token)).json()
    rest = client.get("/schedules", params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth(token)).json()
    assert sorted(item["id"] for item in first["items"] + rest["items"]) == sorted(ids)
    assert len(first["items"]) == 2 and rest["next_cursor"] is None


# -- firing ---------------------------------------------------------------------------------------------------------


def test_a_due_schedule_submits_one_job_as_its_owner(client: TestClient, token_for: TokenFor) -> None:
    token = token_for("alice", "acme")
    created = create(client, token, tags=["nightly"], metadata={"team": "data"}, payload={"duration_s": 0, "result": 7})
    tick = utcnow()
    set_next_fire_at(client, created["id"], tick)
    [job] = wait_for_jobs(client, token, created["id"], 1)
    assert (job["user_id"], job["tenant_id"], job["task"]) == ("alice", "acme", "general.demo")
    assert job["tags"] == ["nightly"]
    assert job["metadata"] == {"team": "data", "schedule_id": created["id"], "schedule_tick": tick.isoformat()}
    schedule = wait_until_settled(client, token, created["id"])
    assert datetime.fromisoformat(schedule["last_fired_at"]) == tick and schedule["last_job_id"] == job["id"]
    assert schedule["next_fire_times"] == created["next_fire_times"]  # back to New Year
    deadline = time.monotonic() + 10
    while client.get(f"/jobs/{job['id']}", headers=auth(token)).json()["state"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_skip_drops_a_long_missed_tick_and_run_once_fires_it(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    skip = create(client, token, missed="skip")["id"]
    run_once = create(client, token, missed="run_once")["id"]
    missed = utcnow() - timedelta(hours=2)  # as if no scheduler ran for two hours
    for schedule_id in (skip, run_once):
        set_next_fire_at(client, schedule_id, missed)
    [job] = wait_for_jobs(client, token, run_once, 1)
    assert job["metadata"]["schedule_tick"] == missed.isoformat()
    skipped = wait_until_settled(client, token, skip)
    assert skipped["last_fired_at"] is None and jobs_of(client, token, skip) == []


def test_schedulers_racing_for_one_tick_make_one_job(client: TestClient, token_for: TokenFor) -> None:
    token = token_for("alice", "acme")
    schedule_id = create(client, token)["id"]
    store: ScheduleStore = state(client).schedules
    submitter: JobSubmitter = state(client).submitter

    async def race() -> None:
        # Three more schedulers read the schedule due, then all fire it (the app's own scheduler joins in)
        stale = await store.get_visible(schedule_id, ALICE)
        due = utcnow()
        await store.claim_tick(schedule_id, expected=stale.next_fire_at, next_fire_at=due, tick=None, now=due)
        read = stale.model_copy(update={"next_fire_at": due})
        await asyncio.gather(*(ScheduleFirer(store, submitter).fire(read, due) for _ in range(3)))

    client.portal.call(race)  # type: ignore[union-attr]
    assert len(wait_for_jobs(client, token, schedule_id, 1)) == 1


def test_a_tick_whose_claimer_died_is_submitted_once_by_a_later_sweep(client: TestClient, token_for: TokenFor) -> None:
    token = token_for("alice", "acme")
    schedule_id = create(client, token)["id"]
    store: ScheduleStore = state(client).schedules
    tick = utcnow() - timedelta(minutes=5)

    async def die_after_claiming() -> None:
        current = await store.get_visible(schedule_id, ALICE)
        # Claimed a minute ago by a scheduler that died before submitting
        year, claimed_at = current.next_fire_at, utcnow() - timedelta(minutes=1)
        assert await store.claim_tick(schedule_id, expected=year, next_fire_at=year, tick=tick, now=claimed_at)

    client.portal.call(die_after_claiming)  # type: ignore[union-attr]
    [job] = wait_for_jobs(client, token, schedule_id, 1)
    assert job["metadata"]["schedule_tick"] == tick.isoformat()
    # A claimer that died after storing the job: the tick is submitted again and finds the same job
    client.portal.call(die_after_claiming)  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while client.get(f"/schedules/{schedule_id}", headers=auth(token)).json()["last_job_id"] is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert [found["id"] for found in wait_for_jobs(client, token, schedule_id, 1)] == [job["id"]]


def test_a_tick_whose_task_is_gone_records_why_and_makes_no_job(client: TestClient, token_for: TokenFor) -> None:
    token = token_for("alice", "acme")
    store: ScheduleStore = state(client).schedules
    now = utcnow()
    # Stored directly: the API refuses unknown tasks, but a task module can be removed after the schedule was made
    gone = ScheduleDocument(
        id=new_id(),
        tenant_id="acme",
        user_id="alice",
        cron=YEARLY,
        timezone="UTC",
        missed=MissedTicks.SKIP,
        task="general.retired",
        created_at=now,
        next_fire_at=now,
    )
    client.portal.call(store.insert, gone)  # type: ignore[union-attr]
    schedule = wait_until_settled(client, token, gone.id)
    deadline = time.monotonic() + 10
    while schedule["last_error"] is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
        schedule = client.get(f"/schedules/{gone.id}", headers=auth(token)).json()
    assert "unknown task 'general.retired'" in schedule["last_error"]
    assert datetime.fromisoformat(schedule["last_fired_at"]) == now and jobs_of(client, token, gone.id) == []
