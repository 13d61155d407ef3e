"""Burst benchmark: engineroom's full stack against raw Dramatiq on the same RabbitMQ, in one run.

(a) engineroom: ``--jobs`` submits of ``general.demo`` (``{"duration_s": 0, "steps": 1}``) over ``POST /jobs``,
``--concurrency`` in flight (or, with ``--batch-size N``, over ``POST /jobs/batch`` with N jobs per request, the
realistic bulk path, ``--concurrency`` requests in flight), to a real ``engineroom api`` process; a real
``engineroom worker`` runs them; MongoDB is a separate ``secantusd-py`` process. Timed from the first submit until
a WebSocket client, connected before the burst, has seen ``job.completed`` for every accepted job. Also reported:
the submit-only rate (accepted/s, first submit to last 202) and per-job latency (request sent to ``job.completed``
seen; for a batch, from its request).

(b) the floor: a plain Dramatiq actor keeping a minimal job document on the same SecantusDB (``bench/floor.py``
says how), as many jobs, inserted ``insert_many`` of ``--batch-size`` at a time (one ``insert_one`` per job
without it). Timed from the first insert until the last job completed. ``--no-floor`` skips it.

(c) raw Dramatiq: as many no-op messages through ``RabbitmqBroker`` to a ``dramatiq`` worker with the same
processes and threads (``bench/raw_worker.py``). Timed from the first enqueue until the last message's actor
ran (each writes its finish time to a file; the benchmark waits for every line).

Repeats interleave (engineroom, floor, raw, engineroom, ...). Each run uses its own namespace for queues and
the events exchange and deletes them at the end; every process started is stopped, on error too. Subprocess
output goes to a temporary directory whose path is printed, with a count of warnings and errors per log. CPU
seconds per burst are read from ``/proc`` for each process group (API, worker, SecantusDB) and for this process,
and reported per job too; so are SecantusDB's ``serverStatus`` counters (``opcounters`` and
``network.numRequests``: database round trips per job), for engineroom and the floor alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from bench._baselines import (
    FloorSample,
    RawSample,
    cost_comparisons,
    floor_figures,
    floor_mode,
    measure_floor,
    measure_raw,
    per_job_figures,
)
from bench._common import (
    RESULTS_DIR,
    Comparison,
    Delta,
    Figure,
    RunContext,
    Stack,
    add_run_options,
    auth,
    chunks,
    config_from_args,
    cpu_reading,
    db_reading,
    engineroom_stack,
    machine,
    parser_for,
    publish,
    run_context,
    run_report,
)

DEFAULT_OUTPUT = RESULTS_DIR / "burst.json"
ENGINE = "general"
JOB_BODY: dict[str, Any] = {"task": f"{ENGINE}.demo", "payload": {"duration_s": 0, "steps": 1}}
POLL_S = 0.01
#: httpx's pool costs client CPU per request in proportion to its size (measured: 1.0 ms at 8 connections,
#: 4.4 ms at 48), which on a small machine starves the system under test; so the burst uses several small pools.
CONNECTIONS_PER_CLIENT = 8
#: The brief's target: engineroom's end-to-end jobs/s at least this share of raw Dramatiq's msgs/s.
RATIO_TARGET = 0.5


@dataclass(frozen=True)
class BenchConfig:
    jobs: int
    concurrency: int
    processes: int
    threads: int
    repeat: int
    amqp_url: str
    timeout_s: float
    #: 0: one ``POST /jobs`` per job; N: ``POST /jobs/batch`` with N jobs per request.
    batch_size: int = 0
    #: Measure the floor baseline too (``bench/_baselines.py``): inserts as the batch size says, one per job at 0.
    floor: bool = True


@dataclass(frozen=True)
class EngineroomSample:
    jobs: int
    submit_s: float
    total_s: float
    latency_p50_s: float
    latency_p95_s: float
    cpu_s: dict[str, float] = field(default_factory=dict)
    db_ops_per_job: dict[str, float] = field(default_factory=dict)

    @property
    def accepted_per_s(self) -> float:
        return self.jobs / self.submit_s

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.total_s


# --- (a) engineroom ------------------------------------------------------------------------------------------


class Tracker:
    """Which jobs were accepted and when, which completions the WebSocket saw and when."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.sent: dict[str, float] = {}
        self.completed: dict[str, float] = {}
        self.all_done = asyncio.Event()

    def accepted(self, job_id: str, sent_at: float) -> None:
        self.sent[job_id] = sent_at
        self._check()

    def completed_now(self, job_id: str) -> None:
        self.completed[job_id] = time.perf_counter()
        self._check()

    def _check(self) -> None:
        if len(self.sent) == self.jobs and self.sent.keys() <= self.completed.keys():
            self.all_done.set()

    def latencies(self) -> list[float]:
        return sorted(self.completed[job_id] - sent_at for job_id, sent_at in self.sent.items())


async def _listen(websocket: ClientConnection, tracker: Tracker) -> None:
    """Record every ``job.completed``; a failed job ends the measurement."""
    async for text in websocket:
        event = json.loads(text)
        if event.get("type") == "job.completed":
            tracker.completed_now(event["job_id"])
        elif event.get("type") == "job.failed":
            raise RuntimeError(f"job {event['job_id']} failed: {event.get('data')}")


async def subscribed(websocket: ClientConnection) -> None:
    """Wait for ``hello``, then a ``pong``: the server registers the socket between the two."""
    for expected, frame in (("hello", None), ("pong", {"op": "ping"})):
        if frame is not None:
            await websocket.send(json.dumps(frame))
        message = json.loads(await websocket.recv())
        if message.get("type") != expected:
            raise RuntimeError(f"WebSocket sent {message!r}, expected {expected}")


async def _submitter(client: httpx.AsyncClient, tracker: Tracker, tickets: Iterator[int]) -> None:
    for _ in tickets:
        sent_at = time.perf_counter()
        response = await client.post("/jobs", json=JOB_BODY)
        if response.status_code != 202:
            raise RuntimeError(f"POST /jobs answered {response.status_code}: {response.text[:300]}")
        tracker.accepted(response.json()["id"], sent_at)


async def _batch_submitter(client: httpx.AsyncClient, tracker: Tracker, batches: Iterator[int]) -> None:
    """Post batches from the shared iterator; each job's latency counts from its batch's request."""
    for size in batches:
        sent_at = time.perf_counter()
        response = await client.post("/jobs/batch", json={"jobs": [JOB_BODY] * size})
        if response.status_code != 202:
            raise RuntimeError(f"POST /jobs/batch answered {response.status_code}: {response.text[:300]}")
        for job_id in response.json()["ids"]:
            tracker.accepted(job_id, sent_at)


def _pool_sizes(concurrency: int) -> list[int]:
    """``concurrency`` split into pools of at most ``CONNECTIONS_PER_CLIENT``."""
    full, rest = divmod(concurrency, CONNECTIONS_PER_CLIENT)
    return [CONNECTIONS_PER_CLIENT] * full + ([rest] if rest else [])


async def _submit_all(base_url: str, token: str, config: BenchConfig, tracker: Tracker) -> None:
    """``config.concurrency`` submitters, one connection each, sharing the burst's tickets."""
    headers = auth(token)
    # Shared: each submitter takes the next job, or the next batch.
    tickets = chunks(config.jobs, config.batch_size) if config.batch_size else iter(range(config.jobs))
    submitter = _batch_submitter if config.batch_size else _submitter
    async with contextlib.AsyncExitStack() as stack:
        submitters = []
        for size in _pool_sizes(config.concurrency):
            limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
            client = httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=60)
            await stack.enter_async_context(client)
            submitters += [submitter(client, tracker, tickets) for _ in range(size)]
        await asyncio.gather(*submitters)


async def _await_completions(listener: asyncio.Task[None], tracker: Tracker, timeout_s: float) -> None:
    done = asyncio.create_task(tracker.all_done.wait())
    await asyncio.wait({done, listener}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    done.cancel()
    if listener.done() and not tracker.all_done.is_set():
        listener.result()  # re-raise what ended it
        raise RuntimeError("the WebSocket closed before every job completed")
    if not tracker.all_done.is_set():
        raise RuntimeError(f"{len(tracker.completed)}/{tracker.jobs} completions seen after {timeout_s} s")


async def discard(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and drop its outcome: by now it was either re-raised or superseded by another error."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()


async def engineroom_burst(stack: Stack, config: BenchConfig) -> EngineroomSample:
    """Submit the burst over HTTP and time it until the WebSocket has seen every job complete."""
    tracker = Tracker(config.jobs)
    async with connect(stack.ws_url, max_size=None) as websocket:
        await subscribed(websocket)
        listener = asyncio.create_task(_listen(websocket, tracker))
        try:
            start = time.perf_counter()
            await _submit_all(stack.base_url, stack.token, config, tracker)
            submitted = time.perf_counter()
            await _await_completions(listener, tracker, config.timeout_s)
            finished = time.perf_counter()
        finally:
            await discard(listener)
    latencies = tracker.latencies()
    return EngineroomSample(
        jobs=config.jobs,
        submit_s=submitted - start,
        total_s=finished - start,
        latency_p50_s=statistics.median(latencies),
        latency_p95_s=latencies[int(0.95 * (len(latencies) - 1))],
    )


def measure_engineroom(ctx: RunContext[BenchConfig], repeat: int) -> EngineroomSample:
    """Start an API and a worker on a fresh database, run one burst, stop both."""
    with engineroom_stack(ctx, repeat, ENGINE) as stack:
        cpu = Delta(cpu_reading(stack.process_groups(ctx.database_pid)))
        db_ops = Delta(db_reading(ctx.mongodb_url))
        sample = asyncio.run(engineroom_burst(stack, ctx.config))
        return replace(sample, cpu_s=cpu.since(), db_ops_per_job=db_ops.since(per=ctx.config.jobs))


# --- the run -------------------------------------------------------------------------------------------------


def run(config: BenchConfig) -> dict[str, Any]:
    """All repeats, interleaved (engineroom, floor, raw); returns the report (samples, summary, log findings)."""
    engineroom_samples: list[EngineroomSample] = []
    floor_samples: list[FloorSample] = []
    raw_samples: list[RawSample] = []
    load_before = os.getloadavg()
    with run_context(config, "burst") as ctx:
        for repeat in range(1, config.repeat + 1):
            engineroom_samples.append(sample := measure_engineroom(ctx, repeat))
            print(f"  #{repeat} engineroom {sample.jobs_per_s:8.1f} jobs/s  ({sample.accepted_per_s:.1f} accepted/s)")
            if config.floor:
                floor = measure_floor(ctx, repeat, config.jobs, max(1, config.batch_size), config.timeout_s)
                floor_samples.append(floor)
                print(f"  #{repeat} floor      {floor.jobs_per_s:8.1f} jobs/s  ({floor_mode(floor.insert_batch)})")
            raw_samples.append(raw := measure_raw(ctx, repeat, config.jobs, config.timeout_s))
            print(f"  #{repeat} raw        {raw.messages_per_s:8.1f} msgs/s  ({raw.enqueued_per_s:.1f} enqueued/s)")
    figures_ = figures(engineroom_samples, floor_samples, raw_samples)
    report = run_report(config, ctx.work_dir, engineroom_samples, raw_samples, figures_)
    return {**report, "floor": [asdict(floor) for floor in floor_samples], **machine(load_before)}


# --- the report ----------------------------------------------------------------------------------------------


def figures(engineroom: list[EngineroomSample], floor: list[FloorSample], raw: list[RawSample]) -> list[Figure]:
    """Each reported figure with its value per repeat; a ratio pairs each repeat with its neighbour's."""
    ratios = [e.jobs_per_s / r.messages_per_s for e, r in zip(engineroom, raw, strict=True)]
    rows: list[Figure] = [
        ("engineroom end-to-end jobs/s", [s.jobs_per_s for s in engineroom]),
        ("engineroom submit-only accepted/s", [s.accepted_per_s for s in engineroom]),
        ("engineroom latency p50 s", [s.latency_p50_s for s in engineroom]),
        ("engineroom latency p95 s", [s.latency_p95_s for s in engineroom]),
        ("raw dramatiq msgs/s", [s.messages_per_s for s in raw]),
        ("raw dramatiq enqueue-only msgs/s", [s.enqueued_per_s for s in raw]),
        ("ratio engineroom/raw (jobs/s)", ratios),
        *breakdown("engineroom cpu-s", [s.cpu_s for s in engineroom]),
        *per_job_figures(
            "engineroom",
            [s.cpu_s for s in engineroom],
            [s.db_ops_per_job for s in engineroom],
            [s.jobs for s in engineroom],
        ),
        *breakdown("raw cpu-s", [s.cpu_s for s in raw]),
    ]
    if floor:
        rows += floor_figures("floor", floor)
        rows.append(
            (
                "ratio engineroom/floor (jobs/s)",
                [e.jobs_per_s / f.jobs_per_s for e, f in zip(engineroom, floor, strict=True)],
            )
        )
    return rows


def breakdown(label: str, readings: list[dict[str, float]]) -> list[Figure]:
    """One figure per name a per-repeat reading holds (CPU seconds per process group, database operations)."""
    names = [name for name in readings[0] if any(reading[name] for reading in readings)] if readings else []
    return [(f"{label} {name}", [reading[name] for reading in readings]) for name in names]


def comparisons(result: dict[str, Any]) -> list[Comparison]:
    """The suite's throughput lines: end-to-end jobs/s against raw Dramatiq's msgs/s (the target), then against
    the floor, and the floor's database round trips and SecantusDB CPU per job beside engineroom's."""
    summary, config = result["summary"], result["config"]
    ratio = summary["ratio engineroom/raw (jobs/s)"]["median"]
    path = f"batch {config['batch_size']}" if config.get("batch_size") else "POST /jobs"
    lines = [
        Comparison(
            figure=f"throughput jobs/s ({config['jobs']} jobs, {path})",
            engineroom=summary["engineroom end-to-end jobs/s"],
            baseline=summary["raw dramatiq msgs/s"],
            baseline_is="raw Dramatiq no-op actors, same RabbitMQ, same processes and threads",
            target=f"ratio >= {RATIO_TARGET}",
            met=ratio >= RATIO_TARGET,
            ratio=ratio,
        )
    ]
    if "floor jobs/s" in summary:
        mode = floor_mode(max(1, config.get("batch_size", 0)))
        lines.append(
            Comparison(
                figure=f"throughput jobs/s vs floor ({config['jobs']} jobs)",
                engineroom=summary["engineroom end-to-end jobs/s"],
                baseline=summary["floor jobs/s"],
                baseline_is=f"plain Dramatiq actor, minimal job document on the same SecantusDB, {mode}",
                target="-",
                met=None,
                ratio=summary["ratio engineroom/floor (jobs/s)"]["median"],
            )
        )
        lines += cost_comparisons(summary, "throughput", "engineroom", "floor")
    return lines


def parse_args(argv: list[str] | None) -> tuple[BenchConfig, Path]:
    parser = parser_for("burst", __doc__)
    add_run_options(parser, repeat=3, output=DEFAULT_OUTPUT)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=48, help="HTTP requests in flight (submits or batches)")
    parser.add_argument("--batch-size", type=int, default=0, help="submit over POST /jobs/batch, N jobs per request")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="per burst")
    parser.add_argument(
        "--no-floor", dest="floor", action="store_false", help="skip the floor baseline (plain actor, same database)"
    )
    args = parser.parse_args(argv)
    return config_from_args(BenchConfig, args), args.output


def main(argv: list[str] | None = None) -> int:
    config, output = parse_args(argv)
    path = f"POST /jobs/batch x {config.batch_size}" if config.batch_size else "POST /jobs"
    print(
        f"burst: {config.jobs} jobs ({path}) x {config.repeat} repeats, workers {config.processes}p x {config.threads}t"
    )
    result = run(config)
    publish(output, result)
    return 0
