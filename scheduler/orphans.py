"""Whether a ``running`` job whose lease lapsed is really orphaned: pure judgment, no I/O.

A lease lapses when its worker's heartbeat is late, and a heartbeat is late both when the worker is gone and when
it is only slow (a saturated database, both cores busy). Taking the job from a slow worker starts it a second time
while the first run goes on, so a lapsed lease is judged against the worker's own liveness: its document in
``workers``, which its heartbeat upserts with the jobs it runs.
"""

from __future__ import annotations

from collections.abc import Mapping

from engineroom.models.job import JobDocument
from engineroom.models.worker import ProcessKind, WorkerPublic


def is_orphaned(job: JobDocument, live_workers: Mapping[str, WorkerPublic]) -> bool:
    """True if no live worker holds ``job``: its worker is not live, or is live and has reported since the job
    started without listing it (it lost track of the job, e.g. its outcome write failed)."""
    worker = live_workers.get(job.worker_id or "")
    if worker is None or worker.kind != ProcessKind.WORKER:
        return True
    if job.id in worker.current_job_ids:
        return False
    reported_since_start = job.started_at is None or worker.last_heartbeat > job.started_at
    return reported_since_start
