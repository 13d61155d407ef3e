"""Backlog benchmark: what a user who submits a big batch sees, the engine at its default limit, beside the floor
baseline in the same run.

(a) engineroom: a real ``engineroom api``, ``engineroom worker --engines general`` (``--processes`` ×
``--threads``, 1 × 8 by default) and ``engineroom scheduler`` on a separate ``secantusd-py``; ``general`` keeps its
default ``max_concurrency`` (2: the benchmark does not raise it, so most jobs wait parked for a slot and the line
releases them). A WebSocket client connects first; then ``--jobs`` ``general.demo`` jobs
(``{"duration_s": 0, "steps": 1}``) go in over ``POST /jobs/batch``, ``--batch-size`` per request, ``--concurrency``
requests in flight, while the WebSocket counts ``job.completed``. The run stops when every job completed or at
``--time-cap-s`` after the first submit, whichever comes first, and reports how many completed.

Reported: jobs/s over the whole run (first submit to last completion), the completion rate over the first, the
middle and the last ``--window`` completions (a window's rate is its completions after the first over the time
from its first to its last, so it does not depend on when submitting ended) and their spread (max/min − 1;
target <= 25 %), the queue's own count from ``GET /queues/general`` at the end, CPU ms per job of each process
and SecantusDB's ``serverStatus`` counters per job (database round trips).

(b) the floor: a plain Dramatiq actor keeping a minimal job document on the same SecantusDB (``bench/floor.py``),
as many jobs, ``insert_many`` of ``--batch-size``; no limit, so it is the ceiling a limit of 2 can only approach.
``--no-floor`` skips it.

Repeats interleave (engineroom, floor, engineroom, ...); each engineroom repeat has a fresh database and fresh
processes, and only the processes' public interfaces are used (HTTP, WebSocket, the ``engineroom`` command).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from bench._baselines import FloorSample, cost_comparisons, floor_figures, measure_floor, per_job_figures
from bench._batches import Batches, SubmitProgress, submit_batches
from bench._common import (
    RESULTS_DIR,
    Comparison,
    Delta,
    Figure,
    RunContext,
    Stack,
    add_run_options,
    auth,
    config_from_args,
    cpu_reading,
    db_reading,
    delete_topology,
    engineroom_stack,
    machine,
    parser_for,
    publish,
    run_context,
    run_report,
    target_lines,
)
from bench.burst import ENGINE, JOB_BODY, discard, subscribed

DEFAULT_OUTPUT = RESULTS_DIR / "backlog.json"
#: The issue's target: the completion rate of the first, middle and last windows within this share of each other.
SPREAD_TARGET = 0.25
#: Seconds between progress lines while a repeat runs.
PROGRESS_EVERY_S = 30.0


@dataclass(frozen=True)
class BacklogConfig:
    jobs: int
    batch_size: int
    concurrency: int
    processes: int
    threads: int
    repeat: int
    amqp_url: str
    #: Completions per window (first, middle, last); a third of ``jobs`` when that is fewer.
    window: int
    #: Seconds after the first submit at which the repeat stops and reports what completed.
    time_cap_s: float
    floor: bool = True


@dataclass(frozen=True)
class BacklogSample:
    jobs: int
    accepted: int
    completed: int
    submit_s: float
    #: First submit to the last completion seen (to the cap, if it stopped there).
    total_s: float
    capped: bool
    window: int
    #: jobs/s over the ``first``, ``middle`` and ``last`` windows of completions.
    window_rates: dict[str, float]
    #: ``GET /queues/general`` at the end: ``max_concurrency``, ``completed_last_hour``, ``queued``, ``running``.
    queue: dict[str, Any] = field(default_factory=dict)
    #: CPU seconds over the repeat per process group (api, worker, scheduler, secantusd, bench).
    cpu_s: dict[str, float] = field(default_factory=dict)
    #: ``serverStatus`` counters per completed job (``db_reading``).
    db_per_job: dict[str, float] = field(default_factory=dict)

    @property
    def jobs_per_s(self) -> float:
        return self.completed / self.total_s

    @property
    def spread(self) -> float:
        """max/min − 1 of the window rates; infinite without three windows (a run capped short of them)."""
        rates = list(self.window_rates.values())
        return max(rates) / min(rates) - 1 if len(rates) == 3 and min(rates) > 0 else float("inf")


def window_rates(times: list[float], jobs: int, window: int) -> tuple[int, dict[str, float]]:
    """The window size and the completion rate over the first, middle and last windows of ``times``. A window's
    rate is its completions after the first over the time from its first to its last. The size is ``window``, or a
    third of ``jobs`` when that is smaller, so windows never overlap and a capped run has the size a complete one
    would; a run that stopped short of three windows has only the first (if it got that far)."""
    ordered, size = sorted(times), min(window, jobs // 3)
    if size < 2 or len(ordered) < size:
        return size, {}
    starts = {"first": 0}
    if len(ordered) >= 3 * size:
        starts |= {"middle": (len(ordered) - size) // 2, "last": len(ordered) - size}
    return size, {
        name: (size - 1) / max(ordered[start + size - 1] - ordered[start], 1e-9) for name, start in starts.items()
    }


# --- (a) engineroom ------------------------------------------------------------------------------------------


class Completions:
    """When the WebSocket saw each job complete; ``all_done`` once ``expected`` have."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.at: dict[str, float] = {}
        self.all_done = asyncio.Event()

    def seen(self, job_id: str) -> None:
        self.at.setdefault(job_id, time.perf_counter())
        if len(self.at) >= self.expected:
            self.all_done.set()


async def _listen(websocket: ClientConnection, completions: Completions) -> None:
    """Record every ``job.completed``; a failed job ends the measurement (``general.demo`` does not fail)."""
    async for text in websocket:
        event = json.loads(text)
        if event.get("type") == "job.completed":
            completions.seen(event["job_id"])
        elif event.get("type") == "job.failed":
            raise RuntimeError(f"job {event['job_id']} failed: {event.get('data')}")


async def _await_completions(
    listener: asyncio.Task[None], submitting: asyncio.Task[Any], completions: Completions, cap_at: float
) -> None:
    """Until every job completed or ``cap_at`` (``perf_counter``); a progress line every ``PROGRESS_EVERY_S``.

    Raises:
      RuntimeError: the WebSocket closed first.
    """
    done = asyncio.create_task(completions.all_done.wait())
    try:
        while not done.done() and (remaining := cap_at - time.perf_counter()) > 0:
            waiting = {done, listener} | ({submitting} if not submitting.done() else set())
            await asyncio.wait(waiting, timeout=min(remaining, PROGRESS_EVERY_S), return_when=asyncio.FIRST_COMPLETED)
            if submitting.done():
                submitting.result()  # re-raise a refused batch
            if listener.done() and not done.done():
                listener.result()  # re-raise what ended it
                raise RuntimeError("the WebSocket closed before every job completed")
            print(f"    {len(completions.at)}/{completions.expected} completed", flush=True)
    finally:
        done.cancel()


@dataclass(frozen=True)
class _Progress:
    accepted: int
    completed_at: list[float]
    submit_s: float
    total_s: float
    capped: bool


async def engineroom_backlog(stack: Stack, config: BacklogConfig) -> _Progress:
    """Submit the batches while counting completions on the WebSocket, until all completed or the cap."""
    completions, submitted = Completions(config.jobs), SubmitProgress()
    batches = Batches(JOB_BODY, config.jobs, config.batch_size, config.concurrency, config.time_cap_s)
    async with connect(stack.ws_url, max_size=None) as websocket:
        await subscribed(websocket)
        listener = asyncio.create_task(_listen(websocket, completions))
        start = time.perf_counter()
        submitting = asyncio.create_task(submit_batches(stack.base_url, stack.token, batches, submitted))
        try:
            await _await_completions(listener, submitting, completions, start + config.time_cap_s)
        finally:
            await discard(listener)
            finished = submitting.done() and not submitting.cancelled() and submitting.exception() is None
            submit_s = submitting.result()[1] if finished else time.perf_counter() - start
            await discard(submitting)
    capped = not completions.all_done.is_set()
    times = [at - start for at in completions.at.values()]
    total_s = config.time_cap_s if capped or not times else max(times)
    return _Progress(submitted.accepted, times, submit_s, total_s, capped)


def _queue_figures(stack: Stack) -> dict[str, Any]:
    """What ``GET /queues/general`` says now: its limit (the default, 2) and its own counts."""
    answer = httpx.get(f"{stack.base_url}/queues/{ENGINE}", headers=auth(stack.token), timeout=60)
    answer.raise_for_status()
    stats = answer.json()
    return {name: stats[name] for name in ("max_concurrency", "completed_last_hour", "queued", "running")}


def measure_engineroom(ctx: RunContext[BacklogConfig], repeat: int) -> BacklogSample:
    """Start an API, a worker and a scheduler on a fresh database, limits as they come, run one backlog, stop."""
    config = ctx.config
    with engineroom_stack(ctx, repeat, ENGINE, raise_limit=False, scheduler=True) as stack:
        cpu = Delta(cpu_reading(stack.process_groups(ctx.database_pid)))
        db = Delta(db_reading(ctx.mongodb_url))
        progress = asyncio.run(engineroom_backlog(stack, config))
        completed = len(progress.completed_at)
        cpu_s, db_per_job = cpu.since(), db.since(per=max(1, completed))
        queue = _queue_figures(stack)
    window, rates = window_rates(progress.completed_at, config.jobs, config.window)
    return BacklogSample(
        config.jobs,
        progress.accepted,
        completed,
        progress.submit_s,
        progress.total_s,
        progress.capped,
        window,
        rates,
        queue,
        cpu_s,
        db_per_job,
    )


# --- the run and the report ----------------------------------------------------------------------------------


def _print_sample(repeat: int, sample: BacklogSample) -> None:
    rates = "  ".join(f"{name} {rate:.1f}" for name, rate in sample.window_rates.items()) or "fewer than one"
    spread = "n/a" if sample.spread == float("inf") else f"{sample.spread:.0%}"
    capped = f"  CAPPED at {sample.total_s:.0f} s" if sample.capped else ""
    print(
        f"  #{repeat} engineroom {sample.completed}/{sample.jobs} completed, {sample.jobs_per_s:.2f} jobs/s"
        f" (windows of {sample.window}: {rates}; spread {spread}){capped}"
        f"  limit {sample.queue.get('max_concurrency')}"
    )


def run(config: BacklogConfig) -> dict[str, Any]:
    """All repeats, interleaved (engineroom, floor); returns the report."""
    engineroom: list[BacklogSample] = []
    floor: list[FloorSample] = []
    load_before = os.getloadavg()
    with run_context(config, "backlog") as ctx:
        for repeat in range(1, config.repeat + 1):
            try:
                engineroom.append(sample := measure_engineroom(ctx, repeat))
            finally:
                delete_topology(ctx.settings)  # a capped repeat leaves messages the next one must not see
            _print_sample(repeat, sample)
            if config.floor:
                floor.append(base := measure_floor(ctx, repeat, config.jobs, config.batch_size, config.time_cap_s))
                print(f"  #{repeat} floor      {base.jobs}/{base.jobs} completed, {base.jobs_per_s:.1f} jobs/s")
    report = run_report(config, ctx.work_dir, engineroom, [], figures(engineroom, floor))
    return {**report, "floor": [asdict(sample) for sample in floor], **machine(load_before)}


def figures(engineroom: list[BacklogSample], floor: list[FloorSample]) -> list[Figure]:
    rows: list[Figure] = [
        ("engineroom completed", [s.completed for s in engineroom]),
        ("engineroom accepted", [s.accepted for s in engineroom]),
        ("engineroom jobs/s", [s.jobs_per_s for s in engineroom]),
        ("engineroom submit s", [s.submit_s for s in engineroom]),
        *[
            (f"engineroom {name} window jobs/s", [s.window_rates.get(name, 0.0) for s in engineroom])
            for name in ("first", "middle", "last")
        ],
        ("engineroom window spread", [s.spread for s in engineroom]),
        ("engineroom queue max_concurrency", [s.queue["max_concurrency"] for s in engineroom]),
        ("engineroom queue completed_last_hour", [s.queue["completed_last_hour"] for s in engineroom]),
        *per_job_figures(
            "engineroom",
            [s.cpu_s for s in engineroom],
            [s.db_per_job for s in engineroom],
            [s.completed for s in engineroom],
        ),
        *floor_figures("floor", floor),
    ]
    if floor:
        rows.append(
            (
                "ratio engineroom/floor (jobs/s)",
                [e.jobs_per_s / f.jobs_per_s for e, f in zip(engineroom, floor, strict=True)],
            )
        )
    return rows


def comparisons(result: dict[str, Any]) -> list[Comparison]:
    """The suite's backlog lines: all completed, jobs/s against the floor's, each window, the spread against its
    target, and round trips and SecantusDB CPU per job against the floor's."""
    summary, config = result["summary"], result["config"]
    jobs, floor = config["jobs"], summary.get("floor jobs/s")
    context = f"backlog ({jobs} jobs, general at default limit)"
    spread_, completed = summary["engineroom window spread"], summary["engineroom completed"]
    all_completed = completed["min"] >= jobs
    lines = [
        Comparison(f"{context} completed", completed, None, "-", f"all {jobs}", met=all_completed),
        Comparison(
            f"{context} jobs/s",
            summary["engineroom jobs/s"],
            floor,
            "the floor: plain Dramatiq actor, minimal job document, same SecantusDB, no limit",
            "-",
            met=None,
            ratio=summary["ratio engineroom/floor (jobs/s)"]["median"] if floor else None,
        ),
        *[
            Comparison(
                f"backlog {name} {config['window']} jobs/s",
                summary[f"engineroom {name} window jobs/s"],
                None,
                "-",
                "-",
                None,
            )
            for name in ("first", "middle", "last")
        ],
        Comparison(
            "backlog window spread (max/min - 1)",
            spread_,
            None,
            "-",
            f"<= {SPREAD_TARGET:.0%}",
            met=all_completed and spread_["median"] <= SPREAD_TARGET,
        ),
    ]
    return lines + cost_comparisons(summary, "backlog", "engineroom", "floor")


def parse_args(argv: list[str] | None) -> tuple[BacklogConfig, Path]:
    parser = parser_for("backlog", __doc__)
    add_run_options(parser, repeat=1, output=DEFAULT_OUTPUT)
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per repeat, engineroom and floor alike")
    parser.add_argument("--batch-size", type=int, default=1000, help="jobs per POST /jobs/batch (floor: per insert)")
    parser.add_argument("--concurrency", type=int, default=1, help="batch requests in flight")
    parser.add_argument("--window", type=int, default=1000, help="completions per rate window")
    parser.add_argument("--time-cap-s", type=float, default=600.0, help="stop a repeat this long after its start")
    parser.add_argument("--no-floor", dest="floor", action="store_false", help="skip the floor baseline")
    args = parser.parse_args(argv)
    if min(args.jobs, args.batch_size, args.concurrency, args.repeat, args.window) < 1 or args.time_cap_s <= 0:
        parser.error("--jobs, --batch-size, --concurrency, --repeat and --window must be at least 1, the cap positive")
    return config_from_args(BacklogConfig, args), args.output


def main(argv: list[str] | None = None) -> int:
    config, output = parse_args(argv)
    print(
        f"backlog: {config.jobs} jobs, {config.batch_size} per POST /jobs/batch, general at its default limit,"
        f" workers {config.processes}p x {config.threads}t, x {config.repeat} repeats, cap {config.time_cap_s:g} s"
    )
    result = run(config)
    publish(output, result, target_lines([line for line in comparisons(result) if line.met is not None]))
    return 0
