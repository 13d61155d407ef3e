"""Pure arithmetic of an engine's limits: how many jobs may start now, and which parked ones."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from engineroom.models.job import JobDocument
from engineroom.models.queue import QueueDocument


def start_room(queue: QueueDocument, now: datetime, rate_window_s: float) -> int:
    """Jobs the engine may start now: 0 while paused, else what concurrency and the rate window leave."""
    if queue.paused:
        return 0
    room = queue.max_concurrency - len(queue.live_holders(now))
    if queue.max_starts_per_minute is not None:
        window_start = now - timedelta(seconds=rate_window_s)
        room = min(room, queue.max_starts_per_minute - sum(1 for start in queue.starts if start > window_start))
    return max(0, room)


def pick_startable(queue: QueueDocument, candidates: list[JobDocument], room: int, now: datetime) -> list[JobDocument]:
    """Up to ``room`` of ``candidates`` (already in start order), skipping tenants at their cap."""
    running = Counter(holder.tenant_id for holder in queue.live_holders(now))
    cap = queue.max_concurrency_per_tenant
    picked: list[JobDocument] = []
    for job in candidates:
        if len(picked) == room:
            break
        if cap is not None and running[job.tenant_id] >= cap:
            continue
        running[job.tenant_id] += 1
        picked.append(job)
    return picked
