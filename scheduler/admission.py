"""Pure arithmetic of an engine's limits: which parked jobs may start (how many: ``QueueDocument.start_room``)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from engineroom.models.job import JobDocument
from engineroom.models.queue import QueueDocument


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
