"""Cron schedules across real processes: two ``engineroom scheduler`` processes (one leading), a leader that
freezes, a scheduler killed and restarted, against SecantusDB and the real RabbitMQ.

A real tick is up to a minute away, so each test sets a yearly schedule's ``next_fire_at`` straight in MongoDB
to the tick it wants, then watches the jobs the gateway lists.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from pymongo import MongoClient
from pymongo.collection import Collection

if TYPE_CHECKING:
    from tests.e2e.conftest import Process, Stack

TokenFor = Callable[..., str]
FAST = {"ENGINEROOM_SCHEDULER_INTERVAL_S": "0.1", "ENGINEROOM_DISPATCH_GRACE_S": "1"}
#: Fires on New Year only, so no real tick interferes.
YEARLY = "0 0 1 1 *"
#: A leader's lease lasts max(5 s, 10 intervals): the longest a fail-over takes, plus margin.
FAIL_OVER_S = 15.0


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def mongo(mongodb_url: str, db_name: str) -> Iterator[Any]:
    """The test's database, for moving ticks and reading the leader lease."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_url, tz_aware=True)
    yield client[db_name]
    client.close()


def create(http: httpx.Client, token: str, **body: Any) -> str:
    fields = {"task": "general.demo", "cron": YEARLY, "payload": {"duration_s": 0}, **body}
    response = http.post("/schedules", json=fields, headers=auth(token))
    assert response.status_code == 201, response.text
    schedule_id: str = response.json()["id"]
    return schedule_id


def make_due(schedules: Collection[dict[str, Any]], schedule_id: str, at: datetime) -> datetime:
    """Set the schedule's next tick to ``at`` (to the millisecond, as MongoDB keeps it) and return it."""
    tick = at.replace(microsecond=at.microsecond // 1000 * 1000)
    assert schedules.update_one({"_id": schedule_id}, {"$set": {"next_fire_at": tick}}).matched_count == 1
    return tick


def ticks_fired(http: httpx.Client, token: str, schedule_id: str) -> list[str]:
    """The ``schedule_tick`` of every job the schedule made, oldest first."""
    jobs = http.get("/jobs", params={"limit": 200}, headers=auth(token)).json()["items"]
    return sorted(job["metadata"]["schedule_tick"] for job in jobs if job["metadata"].get("schedule_id") == schedule_id)


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = FAIL_OVER_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def settled(http: httpx.Client, token: str, schedule_id: str) -> bool:
    """Whether the scheduler has moved the schedule past now and finished its tick."""
    schedule = http.get(f"/schedules/{schedule_id}", headers=auth(token)).json()
    return datetime.fromisoformat(schedule["next_fire_times"][0]) > datetime.now(UTC)


def leader_pid(mongo: Any) -> int:
    lease = mongo["leases"].find_one({"_id": "scheduler"})
    assert lease is not None and lease["expires_at"] > datetime.now(UTC)
    return int(lease["holder"].split(":")[1])


def test_two_schedulers_fire_each_tick_exactly_once_across_a_fail_over(
    stack: Stack, token_for: TokenFor, mongo: Any
) -> None:
    stack.env.update(FAST)
    base_url = stack.start_api()
    schedulers = {process.popen.pid: process for process in (stack.start_scheduler(f"scheduler-{n}") for n in "ab")}
    token = token_for("alice", "acme")
    with httpx.Client(base_url=base_url, timeout=30) as http:
        schedule_id = create(http, token, missed="run_once")
        fired: list[str] = []

        def fire_one_tick() -> None:
            tick = make_due(mongo["schedules"], schedule_id, datetime.now(UTC))
            fired.append(tick.isoformat())
            wait_for(lambda: ticks_fired(http, token, schedule_id) == sorted(fired), f"the job of tick {tick}")
            wait_for(lambda: settled(http, token, schedule_id), "the schedule to move on")

        for _ in range(3):
            fire_one_tick()
        # The leader freezes (as in a long GC pause or a stalled VM): the other takes over and fires the next ticks
        wait_for(lambda: leader_pid(mongo) in schedulers, "a leader")
        frozen = schedulers[leader_pid(mongo)]
        frozen.popen.send_signal(signal.SIGSTOP)
        try:
            for _ in range(2):
                fire_one_tick()
            assert leader_pid(mongo) != frozen.popen.pid
        finally:
            frozen.popen.send_signal(signal.SIGCONT)  # it wakes up as a stale leader
        for _ in range(2):
            fire_one_tick()
        time.sleep(1.0)  # ten sweeps of each scheduler: time for a double fire to show
        assert ticks_fired(http, token, schedule_id) == sorted(fired) and len(set(fired)) == 7
    assert all(process.popen.poll() is None for process in schedulers.values()), stack.logs()


def test_a_scheduler_killed_and_restarted_fires_what_came_due_meanwhile(
    stack: Stack, token_for: TokenFor, mongo: Any
) -> None:
    stack.env.update(FAST)
    base_url = stack.start_api()
    scheduler: Process = stack.start_scheduler("scheduler-1")
    token = token_for("alice", "acme")
    with httpx.Client(base_url=base_url, timeout=30) as http:
        run_once = create(http, token, missed="run_once")
        skip_recent = create(http, token, missed="skip")
        skip_old = create(http, token, missed="skip")
        first = make_due(mongo["schedules"], run_once, datetime.now(UTC))
        wait_for(lambda: ticks_fired(http, token, run_once) == [first.isoformat()], "the first tick")
        wait_for(lambda: settled(http, token, run_once), "the schedule to move on")

        scheduler.popen.send_signal(signal.SIGKILL)  # no clean resignation: its lease must lapse
        scheduler.popen.wait()
        now = datetime.now(UTC)
        missed = make_due(mongo["schedules"], run_once, now - timedelta(minutes=5))
        recent = make_due(mongo["schedules"], skip_recent, now)
        make_due(mongo["schedules"], skip_old, now - timedelta(minutes=5))
        time.sleep(1.0)  # due while no scheduler runs
        assert ticks_fired(http, token, run_once) == [first.isoformat()]

        stack.start_scheduler("scheduler-2")
        both = sorted([first.isoformat(), missed.isoformat()])
        wait_for(lambda: ticks_fired(http, token, run_once) == both, "the missed tick, caught up once")
        wait_for(lambda: ticks_fired(http, token, skip_recent) == [recent.isoformat()], "the recent tick")
        for schedule_id in (run_once, skip_recent, skip_old):
            wait_for(partial(settled, http, token, schedule_id), "the schedules to move on")
        time.sleep(1.0)
        assert ticks_fired(http, token, run_once) == both
        assert ticks_fired(http, token, skip_recent) == [recent.isoformat()]
        assert ticks_fired(http, token, skip_old) == []  # five minutes late: dropped
