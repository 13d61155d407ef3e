"""A job's progress that reaches a gateway after its outcome (another process cancelled it) never reaches a browser."""

from __future__ import annotations

import asyncio

from engineroom.models.event import EventType, new_event
from engineroom.models.principal import Principal
from engineroom.notifications.topics import Topic
from engineroom.notifications.websocket import Hub
from tests.unit.notifications.test_resume import RecordingSocket, settle

ALICE = Principal(user_id="alice", tenant_id="acme")


def deliver(hub: Hub, *events: tuple[EventType, str]) -> None:
    for event_type, job_id in events:
        hub.deliver(new_event(event_type, tenant_id="acme", user_id="alice", job_id=job_id, data={}))


async def test_progress_after_a_jobs_outcome_is_dropped_until_the_job_starts_over() -> None:
    hub = Hub(asyncio.get_running_loop(), buffer_frames=100)
    socket = RecordingSocket()
    connection = hub.add(socket, ALICE, [Topic.parse("mine")])  # type: ignore[arg-type]
    P, C, Q = EventType.JOB_PROGRESS, EventType.JOB_CANCELLED, EventType.JOB_QUEUED
    deliver(hub, (P, "A"), (C, "A"), (P, "A"), (P, "B"), (EventType.JOB_FAILED, "B"), (P, "B"))
    await settle()
    assert [(frame["type"], frame["job_id"]) for frame in socket.sent] == [
        ("job.progress", "A"),
        ("job.cancelled", "A"),
        ("job.progress", "B"),
        ("job.failed", "B"),
    ]
    # An operator's retry queues the job again: its progress is news again.
    socket.sent.clear()
    deliver(hub, (Q, "A"), (EventType.JOB_STARTED, "A"), (P, "A"))
    await settle()
    assert [frame["type"] for frame in socket.sent] == ["job.queued", "job.started", "job.progress"]
    await hub.remove(connection)
