"""Latency benchmark: submit to ``job.started`` on the WebSocket at a steady rate, against raw Dramatiq's enqueue
to actor start at the same rate, in one run.

(a) engineroom: a real ``engineroom api`` and ``engineroom worker --engines general`` (``--processes`` ×
``--threads``) on a separate ``secantusd-py``. A WebSocket client connects first; then ``--jobs`` submits of
``general.demo`` (``{"duration_s": 0, "steps": 1}``) over ``POST /jobs`` are started on a fixed schedule of
``--rate`` per second (each on its own task, so a slow answer does not delay the next submit). A job's latency is
from just before its request is sent until its ``job.started`` frame is read from the WebSocket (one clock, this
process). The first ``--warmup`` jobs are submitted the same way but not counted (first connections, first
imports).

(b) raw Dramatiq: a ``dramatiq`` worker (``bench/raw_worker.py``, same processes and threads); this process sends
as many no-op messages with ``broker.enqueue`` on the same schedule, each carrying ``time.time()`` taken just
before it is enqueued; the actor appends its start time and that enqueue time to a file, so each line is one
message's latency whatever order the threads ran in.

Repeats interleave (engineroom, raw, engineroom, raw, ...); each engineroom repeat has a fresh database and fresh
processes. Reported per side: p50, p99 and max in milliseconds, and the submit rate achieved. Targets (engineroom
p50 <= 5 ms, p99 <= 20 ms; at ``--rate 20`` also the hot-path issue's p50 <= 15 ms, p99 <= 60 ms) are reported, not
asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from bench._common import (
    RESULTS_DIR,
    Comparison,
    Figure,
    RunContext,
    Stack,
    add_run_options,
    auth,
    config_from_args,
    engineroom_stack,
    machine,
    noop_message,
    parser_for,
    percentile,
    publish,
    raw_broker,
    raw_worker,
    run_context,
    run_report,
    target_lines,
)
from bench.burst import ENGINE, JOB_BODY, discard, subscribed

DEFAULT_OUTPUT = RESULTS_DIR / "latency.json"
#: The brief's targets for engineroom, in milliseconds.
P50_TARGET_MS = 5.0
P99_TARGET_MS = 20.0
#: The hot-path issue's targets (milliseconds), which it sets at 20 submits a second on an idle engine.
ISSUE_RATE = 20.0
ISSUE_TARGETS_MS = {"p50": 15.0, "p99": 60.0}
POLL_S = 0.01
#: Connections for the paced submits: enough that a slow answer never holds up the schedule at 50/s.
CONNECTIONS = 8


@dataclass(frozen=True)
class LatencyConfig:
    jobs: int
    rate: float
    warmup: int
    processes: int
    threads: int
    repeat: int
    amqp_url: str
    #: Seconds to wait, after the last submit, for the last start.
    timeout_s: float


@dataclass(frozen=True)
class LatencySample:
    #: Counted (warm-up excluded), and of those how many were seen starting.
    jobs: int
    seen: int
    #: Submits (or enqueues) per second achieved over the whole schedule, warm-up included.
    rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    #: engineroom only, medians: from the submit to the worker's start (the ``job.started`` event's own ``ts``), and
    #: from there to the socket (its record, publish and the gateway): where the latency goes.
    to_start_p50_ms: float | None = None
    to_socket_p50_ms: float | None = None


def sample_of(latencies_s: list[float], jobs: int, rate: float) -> LatencySample:
    ordered = sorted(1000 * value for value in latencies_s)
    if not ordered:
        raise RuntimeError("no latency measured")
    return LatencySample(
        jobs=jobs,
        seen=len(ordered),
        rate=rate,
        p50_ms=statistics.median(ordered),
        p99_ms=percentile(ordered, 0.99),
        max_ms=ordered[-1],
    )


@dataclass(frozen=True)
class _Seen:
    """A ``job.started`` frame: read at ``perf`` (this process's clock), stamped ``ts`` by the worker (wall clock)."""

    perf: float
    wall: float
    ts: float


def _schedule(config: LatencyConfig) -> list[float]:
    """Offsets in seconds from the start of each submit, warm-up first."""
    return [index / config.rate for index in range(config.warmup + config.jobs)]


# --- (a) engineroom ------------------------------------------------------------------------------------------


async def _listen_started(websocket: ClientConnection, started: dict[str, _Seen]) -> None:
    """Record when each ``job.started`` arrives (it may arrive before its submit's answer does)."""
    async for text in websocket:
        event = json.loads(text)
        if event.get("type") == "job.started":
            stamped = datetime.fromisoformat(event["ts"]).timestamp()
            started.setdefault(event["job_id"], _Seen(time.perf_counter(), time.time(), stamped))
        elif event.get("type") == "job.failed":
            raise RuntimeError(f"job {event['job_id']} failed: {event.get('data')}")


async def _submit(client: httpx.AsyncClient) -> tuple[str, float]:
    """One ``POST /jobs``; returns the job's id and when the request was about to be sent."""
    sent_at = time.perf_counter()
    response = await client.post("/jobs", json=JOB_BODY)
    if response.status_code != 202:
        raise RuntimeError(f"POST /jobs answered {response.status_code}: {response.text[:300]}")
    return response.json()["id"], sent_at


async def _paced_submits(stack: Stack, config: LatencyConfig) -> tuple[list[tuple[str, float]], float]:
    """Start each submit at its scheduled time; returns ``(id, sent at)`` in schedule order and the rate achieved."""
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers=auth(stack.token), limits=limits, timeout=60
    ) as client:
        tasks = []
        start = time.perf_counter()
        for offset in _schedule(config):
            await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
            tasks.append(asyncio.create_task(_submit(client)))
        submitted = await asyncio.gather(*tasks)
        return list(submitted), len(tasks) / (time.perf_counter() - start)


async def engineroom_latency(stack: Stack, config: LatencyConfig) -> LatencySample:
    started: dict[str, _Seen] = {}
    async with connect(stack.ws_url, max_size=None) as websocket:
        await subscribed(websocket)
        listener = asyncio.create_task(_listen_started(websocket, started))
        try:
            submitted, rate = await _paced_submits(stack, config)
            counted = submitted[config.warmup :]
            deadline = time.monotonic() + config.timeout_s
            while any(job_id not in started for job_id, _ in counted) and time.monotonic() < deadline:
                if listener.done():
                    listener.result()  # re-raise what ended it
                    raise RuntimeError("the WebSocket closed before every job started")
                await asyncio.sleep(POLL_S)
        finally:
            await discard(listener)
    seen = [(started[job_id], sent_at) for job_id, sent_at in counted if job_id in started]
    sample = sample_of([frame.perf - sent_at for frame, sent_at in seen], config.jobs, rate)
    # The worker's stamp is wall-clock time (one machine, one clock): place each send on it by the frame's own.
    to_socket = [frame.wall - frame.ts for frame, _ in seen]
    to_start = [(frame.perf - sent_at) - (frame.wall - frame.ts) for frame, sent_at in seen]
    return replace(
        sample,
        to_start_p50_ms=1000 * statistics.median(to_start),
        to_socket_p50_ms=1000 * statistics.median(to_socket),
    )


def measure_engineroom(ctx: RunContext[LatencyConfig], repeat: int) -> LatencySample:
    """Start an API and a worker on a fresh database, run the paced submits, stop both."""
    with engineroom_stack(ctx, repeat, ENGINE) as stack:
        return asyncio.run(engineroom_latency(stack, ctx.config))


# --- (b) raw Dramatiq ----------------------------------------------------------------------------------------


def _paced_enqueues(ctx: RunContext[LatencyConfig]) -> float:
    """Enqueue each message at its scheduled time, stamped with ``time.time()``; returns the rate achieved."""
    schedule = _schedule(ctx.config)
    with raw_broker(ctx.config.amqp_url) as broker:
        start = time.perf_counter()
        for offset in schedule:
            time.sleep(max(0.0, start + offset - time.perf_counter()))
            broker.enqueue(noop_message(ctx.raw_queue, time.time()))
        return len(schedule) / (time.perf_counter() - start)


def _raw_lines(counter: Path) -> list[tuple[float, float]]:
    """``(started, enqueued)`` per line the actor wrote."""
    pairs = (line.split() for line in counter.read_text().splitlines())
    return [(float(started), float(sent)) for started, sent in pairs]


def measure_raw(ctx: RunContext[LatencyConfig], repeat: int) -> LatencySample:
    """Start a plain ``dramatiq`` worker, enqueue on the schedule, read each message's latency, stop it."""
    config, counter = ctx.config, ctx.work_dir / f"raw-latency-{repeat}.times"
    counter.touch()
    with raw_worker(ctx, repeat, counter) as worker:
        rate = _paced_enqueues(ctx)
        total, deadline = config.warmup + config.jobs, time.monotonic() + config.timeout_s
        while len(lines := _raw_lines(counter)) < total and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(POLL_S)
    counted = sorted(lines, key=lambda line: line[1])[config.warmup :]  # schedule order: by enqueue time
    return sample_of([started - sent for started, sent in counted], config.jobs, rate)


# --- the run and the report ----------------------------------------------------------------------------------


def run(config: LatencyConfig) -> dict[str, Any]:
    """All repeats, interleaved; returns the report."""
    engineroom: list[LatencySample] = []
    raw: list[LatencySample] = []
    load_before = os.getloadavg()
    with run_context(config, "latency", "latency-raw") as ctx:
        for repeat in range(1, config.repeat + 1):
            for side, measure, samples in (("engineroom", measure_engineroom, engineroom), ("raw", measure_raw, raw)):
                samples.append(sample := measure(ctx, repeat))
                split = ""
                if sample.to_start_p50_ms is not None and sample.to_socket_p50_ms is not None:
                    to_start, to_socket = sample.to_start_p50_ms, sample.to_socket_p50_ms
                    split = f"; p50 to the worker's start {to_start:.1f} ms, then to the socket {to_socket:.1f}"
                print(
                    f"  #{repeat} {side:<10} p50 {sample.p50_ms:7.2f} ms  p99 {sample.p99_ms:7.2f} ms"
                    f"  ({sample.seen}/{sample.jobs} seen, {sample.rate:.1f}/s{split})"
                )
    return {**report(config, ctx.work_dir, engineroom, raw), **machine(load_before)}


def figures(engineroom: list[LatencySample], raw: list[LatencySample]) -> list[Figure]:
    rows: list[Figure] = []
    for side, samples in (("engineroom submit->job.started", engineroom), ("raw enqueue->actor start", raw)):
        rows += [
            (f"{side} p50 ms", [s.p50_ms for s in samples]),
            (f"{side} p99 ms", [s.p99_ms for s in samples]),
            (f"{side} max ms", [s.max_ms for s in samples]),
            (f"{side} seen of counted", [s.seen / s.jobs for s in samples]),
            (f"{side} rate achieved /s", [s.rate for s in samples]),
        ]
    rows += [
        ("engineroom submit->worker start p50 ms", [s.to_start_p50_ms or 0.0 for s in engineroom]),
        ("engineroom worker start->socket p50 ms", [s.to_socket_p50_ms or 0.0 for s in engineroom]),
    ]
    return rows


def report(
    config: LatencyConfig, work_dir: Path, engineroom: list[LatencySample], raw: list[LatencySample]
) -> dict[str, Any]:
    return run_report(config, work_dir, engineroom, raw, figures(engineroom, raw))


def comparisons(result: dict[str, Any]) -> list[Comparison]:
    """The suite's latency lines: p50 and p99 against raw Dramatiq's at the same rate, with the brief's targets and,
    at the hot-path issue's rate, with that issue's too. A repeat where some job was never seen starting cannot
    meet a target."""
    summary, rate = result["summary"], result["config"]["rate"]
    complete = summary["engineroom submit->job.started seen of counted"]["min"] >= 1.0
    targets = [("p50", P50_TARGET_MS, ""), ("p99", P99_TARGET_MS, "")]
    if rate == ISSUE_RATE:
        targets += [(name, target, " (hot-path issue)") for name, target in ISSUE_TARGETS_MS.items()]
    found = []
    for name, target, whose in targets:
        engineroom = summary[f"engineroom submit->job.started {name} ms"]
        found.append(
            Comparison(
                figure=f"latency submit->job.started {name} ms (at {rate:g}/s){whose}",
                engineroom=engineroom,
                baseline=summary[f"raw enqueue->actor start {name} ms"],
                baseline_is=f"raw Dramatiq enqueue -> actor start at {rate:g} msg/s",
                target=f"<= {target:g} ms",
                met=complete and engineroom["median"] <= target,
            )
        )
    return found


def parse_args(argv: list[str] | None) -> tuple[LatencyConfig, Path]:
    parser = parser_for("latency", __doc__)
    add_run_options(parser, repeat=3, output=DEFAULT_OUTPUT)
    parser.add_argument("--jobs", type=int, default=500, help="counted submits (and raw messages) per repeat")
    parser.add_argument("--rate", type=float, default=50.0, help="submits (and raw enqueues) per second")
    parser.add_argument("--warmup", type=int, default=10, help="submits first, on the same schedule, not counted")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="wait for the last start after the last submit")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.repeat < 1 or args.rate <= 0 or args.warmup < 0:
        parser.error("--jobs and --repeat must be at least 1, --rate positive, --warmup not negative")
    return config_from_args(LatencyConfig, args), args.output


def main(argv: list[str] | None = None) -> int:
    config, output = parse_args(argv)
    print(
        f"latency: {config.jobs} jobs (+{config.warmup} warm-up) at {config.rate:g}/s x {config.repeat} repeats,"
        f" workers {config.processes}p x {config.threads}t"
    )
    result = run(config)
    publish(output, result, target_lines(comparisons(result)))
    return 0
