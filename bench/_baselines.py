"""The baselines measured beside engineroom in the same run: raw Dramatiq (no-op actors, ``bench/raw_worker.py``)
and the floor (a plain Dramatiq actor keeping a minimal job document on the same SecantusDB,
``bench/floor_worker.py``).

Each takes the run's ``RunContext`` (its config gives the worker's shape and RabbitMQ) and the job count and
timeout as arguments, so the throughput, backlog and floor benchmarks measure them the same way.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bson import ObjectId
from dramatiq import Message

from bench._common import (
    Comparison,
    Delta,
    Figure,
    RunContext,
    chunks,
    cpu_reading,
    db_reading,
    dramatiq_worker,
    enqueue_noops,
    finish_times,
    mongo_client,
    raw_broker,
    raw_worker,
)

POLL_S = 0.01


def _await_finishes(
    counter: Path, count: int, worker: subprocess.Popen[bytes], what: str, timeout_s: float
) -> list[float]:
    """Poll ``counter`` until it holds ``count`` finish times; returns them.

    Raises:
      RuntimeError: the worker exited, or ``timeout_s`` passed first.
    """
    deadline = time.monotonic() + timeout_s
    while len(times := finish_times(counter)) < count:
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what}: {len(times)}/{count} done")
        time.sleep(POLL_S)
    return times


# --- raw Dramatiq --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawSample:
    messages: int
    enqueue_s: float
    total_s: float
    cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def enqueued_per_s(self) -> float:
        return self.messages / self.enqueue_s

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.total_s


def measure_raw(ctx: RunContext[Any], repeat: int, messages: int, timeout_s: float) -> RawSample:
    """Start a plain ``dramatiq`` worker, send ``messages`` no-op messages, time them until the last actor ran.

    Raises:
      RuntimeError: not every message was processed within ``timeout_s``, or the worker exited.
    """
    counter = ctx.work_dir / f"raw-{repeat}.times"
    counter.touch()
    with raw_worker(ctx, repeat, counter) as worker:
        cpu = Delta(cpu_reading({"worker": worker.pid}))
        start = time.time()
        enqueue_noops(ctx.config.amqp_url, ctx.raw_queue, messages)
        enqueued = time.time()
        what = f"raw dramatiq (see {ctx.log(f'raw-worker-{repeat}')})"
        times = _await_finishes(counter, messages, worker, what, timeout_s)
        return RawSample(messages, enqueued - start, max(times) - start, cpu.since())


# --- the floor -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FloorSample:
    jobs: int
    #: Documents per insert: 1 is ``insert_one`` per job.
    insert_batch: int
    produce_s: float
    total_s: float
    #: CPU seconds over the phase per process group: the floor worker, SecantusDB, this process (the producer).
    cpu_s: dict[str, float] = field(default_factory=dict)
    #: ``serverStatus`` counters per job (``db_reading``).
    db_per_job: dict[str, float] = field(default_factory=dict)

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.total_s

    @property
    def produced_per_s(self) -> float:
        return self.jobs / self.produce_s


def floor_mode(insert_batch: int) -> str:
    return "insert_one per job" if insert_batch <= 1 else f"insert_many of {insert_batch}"


def _produce(ctx: RunContext[Any], database: str, jobs: int, insert_batch: int) -> None:
    """Insert the documents and, after each insert, send one message per document, as a plain producer does."""
    with mongo_client(ctx.mongodb_url) as client, raw_broker(ctx.config.amqp_url) as broker:
        collection = client[database]["jobs"]
        for size in chunks(jobs, max(1, insert_batch)):
            documents = [{"state": "queued", "created_at": datetime.now(UTC)} for _ in range(size)]
            if insert_batch <= 1:
                ids: list[ObjectId] = [collection.insert_one(documents[0]).inserted_id]
            else:
                ids = collection.insert_many(documents).inserted_ids
            for job_id in ids:
                broker.enqueue(Message(ctx.floor_queue, ctx.floor_queue, (str(job_id),), {}, {}))


def measure_floor(ctx: RunContext[Any], repeat: int, jobs: int, insert_batch: int, timeout_s: float) -> FloorSample:
    """Start a floor worker on a fresh database, produce ``jobs``, time them until the last completed; then stop
    the worker and drop the database, so the next side finds SecantusDB as this one did.

    Raises:
      RuntimeError: not every job completed within ``timeout_s``, or the worker exited.
    """
    database, log = f"floor_{repeat}_{insert_batch}", f"floor-worker-{repeat}-{insert_batch}"
    counter = ctx.work_dir / f"{log}.times"
    counter.touch()
    env = {"BENCH_FLOOR_QUEUE": ctx.floor_queue, "BENCH_FLOOR_COUNTER": str(counter)}
    env |= {"BENCH_MONGODB_URL": ctx.mongodb_url, "BENCH_MONGODB_DB": database}
    try:
        with dramatiq_worker(ctx, "bench.floor_worker", ctx.floor_queue, log, env) as worker:
            cpu = Delta(cpu_reading({"worker": worker.pid, "secantusd": ctx.database_pid}))
            db = Delta(db_reading(ctx.mongodb_url))
            start = time.time()
            _produce(ctx, database, jobs, insert_batch)
            produced = time.time()
            times = _await_finishes(counter, jobs, worker, f"floor (see {ctx.log(log)})", timeout_s)
            cpu_s, db_per_job = cpu.since(), db.since(per=jobs)
    finally:
        with mongo_client(ctx.mongodb_url) as client:
            client.drop_database(database)
    return FloorSample(jobs, insert_batch, produced - start, max(times) - start, cpu_s, db_per_job)


# --- the figures ---------------------------------------------------------------------------------------------


def per_job_figures(
    label: str, cpu_s: list[dict[str, float]], db: list[dict[str, float]], jobs: list[int]
) -> list[Figure]:
    """CPU ms per job of each process group and database counters per job, over the repeats; a counter that
    stayed at zero in every repeat is left out."""
    rows: list[Figure] = []
    if cpu_s:
        rows += [
            (
                f"{label} cpu ms/job {group}",
                [1000 * reading[group] / count for reading, count in zip(cpu_s, jobs, strict=True)],
            )
            for group in cpu_s[0]
        ]
    if db:
        names = [name for name in db[0] if any(reading[name] for reading in db)]
        rows += [(f"{label} db {name}/job", [reading[name] for reading in db]) for name in names]
    return rows


def floor_figures(label: str, samples: list[FloorSample]) -> list[Figure]:
    """jobs/s, produced/s, CPU and database round trips per job of floor samples, named after ``label``."""
    if not samples:
        return []
    return [
        (f"{label} jobs/s", [s.jobs_per_s for s in samples]),
        (f"{label} produced/s", [s.produced_per_s for s in samples]),
        *per_job_figures(label, [s.cpu_s for s in samples], [s.db_per_job for s in samples], [s.jobs for s in samples]),
    ]


#: The per-job costs the suite's table sets beside the floor's: (what the line says, the figure's name after its
#: side's label).
COSTS = (("db round trips/job", "db requests/job"), ("secantusd cpu ms/job", "cpu ms/job secantusd"))


def cost_comparisons(summary: dict[str, dict[str, float]], context: str, side: str, floor: str) -> list[Comparison]:
    """Database round trips (``network.numRequests``) and SecantusDB CPU per job of ``side``'s figures in
    ``summary``, against the floor's in the same run (none when the floor was not measured)."""
    lines = []
    for what, name in COSTS:
        if f"{side} {name}" not in summary:
            continue
        lines.append(
            Comparison(
                figure=f"{context} {what}",
                engineroom=summary[f"{side} {name}"],
                baseline=summary.get(f"{floor} {name}"),
                baseline_is="the floor: plain Dramatiq actor, minimal job document, same SecantusDB",
                target="-",
                met=None,
            )
        )
    return lines
