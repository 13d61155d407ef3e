"""Batch-submit benchmark: jobs accepted per second over ``POST /jobs/batch``, against raw Dramatiq's
``broker.enqueue`` of as many messages from one process, in one run.

(a) engineroom: a real ``engineroom api`` process on a separate ``secantusd-py`` (no worker: the figure is what the
gateway accepts, each job stored and its message published, as the baseline's is what the broker accepts).
``--jobs`` ``general.demo`` jobs (``{"duration_s": 0, "steps": 1}``) go in ``--batch-size`` per request (1,000:
the largest batch the API takes), ``--concurrency`` requests in flight, bodies encoded before the clock starts.
Timed from the first request to the last 202; each request's latency is reported too.

(b) raw Dramatiq: ``broker.enqueue`` of as many no-op messages, one after another from this process, to a queue
with engineroom's queue arguments; timed until the broker is closed (what pika buffered is written).

Repeats interleave (engineroom, raw, engineroom, raw, ...); each engineroom repeat has a fresh database and API;
after each pair the namespace's queues (holding the jobs no worker took) and the raw queue are deleted, so every
repeat starts on empty queues. The target (engineroom >= 10,000 jobs/s accepted) is reported, not asserted.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._batches import Batches, submit_batches
from bench._common import (
    RESULTS_DIR,
    Comparison,
    Delta,
    Figure,
    RunContext,
    add_run_options,
    config_from_args,
    cpu_reading,
    delete_topology,
    engineroom_stack,
    enqueue_noops,
    machine,
    parser_for,
    percentile,
    publish,
    run_context,
    run_report,
    target_lines,
)
from bench.burst import ENGINE, JOB_BODY

DEFAULT_OUTPUT = RESULTS_DIR / "batch_submit.json"
#: The brief's target: engineroom's accepted jobs per second.
TARGET_PER_S = 10_000.0


@dataclass(frozen=True)
class BatchConfig:
    jobs: int
    batch_size: int
    concurrency: int
    repeat: int
    amqp_url: str
    #: No request starts after this many seconds; what was accepted by then is reported.
    timeout_s: float


@dataclass(frozen=True)
class EngineroomSample:
    jobs: int
    accepted: int
    submit_s: float
    request_latency_s: dict[str, float]
    cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def accepted_per_s(self) -> float:
        return self.accepted / self.submit_s


@dataclass(frozen=True)
class RawSample:
    messages: int
    enqueue_s: float

    @property
    def enqueued_per_s(self) -> float:
        return self.messages / self.enqueue_s


def measure_engineroom(ctx: RunContext[BatchConfig], repeat: int) -> EngineroomSample:
    """Start an API on a fresh database, post every batch, stop it."""
    config = ctx.config
    with engineroom_stack(ctx, repeat, ENGINE, worker=False) as stack:
        cpu = Delta(cpu_reading({"api": stack.api.pid, "secantusd": ctx.database_pid}))
        batches = Batches(JOB_BODY, config.jobs, config.batch_size, config.concurrency, config.timeout_s)
        progress, submit_s = asyncio.run(submit_batches(stack.base_url, stack.token, batches))
        ordered = sorted(progress.latencies)
        latency = {"p50": statistics.median(ordered), "p95": percentile(ordered, 0.95), "max": ordered[-1]}
        return EngineroomSample(config.jobs, progress.accepted, submit_s, latency, cpu.since())


def measure_raw(ctx: RunContext[BatchConfig]) -> RawSample:
    start = time.perf_counter()
    enqueue_noops(ctx.config.amqp_url, ctx.raw_queue, ctx.config.jobs)
    return RawSample(ctx.config.jobs, time.perf_counter() - start)


def run(config: BatchConfig) -> dict[str, Any]:
    """All repeats, interleaved; returns the report."""
    engineroom: list[EngineroomSample] = []
    raw: list[RawSample] = []
    load_before = os.getloadavg()
    with run_context(config, "batch", "batch-raw") as ctx:
        for repeat in range(1, config.repeat + 1):
            try:
                engineroom.append(sample := measure_engineroom(ctx, repeat))
                print(
                    f"  #{repeat} engineroom {sample.accepted_per_s:9.1f} accepted/s ({sample.accepted}/{sample.jobs})"
                )
                raw.append(raw_sample := measure_raw(ctx))
                print(f"  #{repeat} raw        {raw_sample.enqueued_per_s:9.1f} enqueued/s")
            finally:
                delete_topology(ctx.settings, [ctx.raw_queue])  # the next repeat starts on empty queues
    return {**report(config, ctx.work_dir, engineroom, raw), **machine(load_before)}


def figures(engineroom: list[EngineroomSample], raw: list[RawSample]) -> list[Figure]:
    return [
        ("engineroom accepted jobs/s", [s.accepted_per_s for s in engineroom]),
        ("engineroom jobs accepted", [s.accepted for s in engineroom]),
        ("engineroom request latency p50 s", [s.request_latency_s["p50"] for s in engineroom]),
        ("engineroom request latency max s", [s.request_latency_s["max"] for s in engineroom]),
        ("engineroom cpu-s api", [s.cpu_s["api"] for s in engineroom]),
        ("engineroom cpu-s secantusd", [s.cpu_s["secantusd"] for s in engineroom]),
        ("engineroom cpu-s bench", [s.cpu_s["bench"] for s in engineroom]),
        ("raw dramatiq enqueued msgs/s", [s.enqueued_per_s for s in raw]),
        ("ratio engineroom/raw", [e.accepted_per_s / r.enqueued_per_s for e, r in zip(engineroom, raw, strict=True)]),
    ]


def report(
    config: BatchConfig, work_dir: Path, engineroom: list[EngineroomSample], raw: list[RawSample]
) -> dict[str, Any]:
    return run_report(config, work_dir, engineroom, raw, figures(engineroom, raw))


def comparisons(result: dict[str, Any]) -> list[Comparison]:
    """The suite's batch line; a repeat that did not get every job accepted cannot meet the target."""
    summary, config = result["summary"], result["config"]
    accepted = summary["engineroom accepted jobs/s"]
    complete = summary["engineroom jobs accepted"]["min"] >= config["jobs"]
    return [
        Comparison(
            figure=f"batch submit accepted jobs/s ({config['jobs']} jobs, {config['batch_size']}/request)",
            engineroom=accepted,
            baseline=summary["raw dramatiq enqueued msgs/s"],
            baseline_is="raw Dramatiq broker.enqueue of as many messages from one process",
            target=f">= {TARGET_PER_S:,.0f}/s",
            met=complete and accepted["median"] >= TARGET_PER_S,
            ratio=summary["ratio engineroom/raw"]["median"],
        )
    ]


def parse_args(argv: list[str] | None) -> tuple[BatchConfig, Path]:
    parser = parser_for("batch", __doc__)
    add_run_options(parser, repeat=3, output=DEFAULT_OUTPUT, workers=False)
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per repeat, engineroom and raw alike")
    parser.add_argument("--batch-size", type=int, default=1000, help="jobs per POST /jobs/batch (the API's maximum)")
    parser.add_argument("--concurrency", type=int, default=2, help="batch requests in flight")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="no request starts after this")
    args = parser.parse_args(argv)
    if min(args.jobs, args.batch_size, args.concurrency, args.repeat) < 1:
        parser.error("--jobs, --batch-size, --concurrency and --repeat must be at least 1")
    return config_from_args(BatchConfig, args), args.output


def main(argv: list[str] | None = None) -> int:
    config, output = parse_args(argv)
    print(
        f"batch: {config.jobs} jobs, {config.batch_size} per POST /jobs/batch, {config.concurrency} in flight,"
        f" x {config.repeat} repeats"
    )
    result = run(config)
    publish(output, result, target_lines(comparisons(result)))
    return 0
