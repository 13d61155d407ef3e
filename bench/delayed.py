"""Delayed-jobs benchmark: what holding many far-future jobs costs engineroom and raw Dramatiq, in one run.

(a) engineroom: a real ``engineroom api``, ``engineroom worker --engines general`` and ``engineroom scheduler`` on
a separate ``secantusd-py``. After an idle window (CPU per process group over it), each group's RSS is read; then
``--jobs`` ``general.demo`` jobs with ``delay_s`` = ``--delay-s`` go in over ``POST /jobs/batch`` (1,000 per
request, ``--concurrency`` requests in flight) and the accepted rate is reported. After ``SETTLE_S`` the RSS is read
again, and the CPU of every group over a second idle window shows whether the scheduler's sweeps stay cheap while
that many ``scheduled`` documents exist. Verified directly: the bench database holds every accepted job as
``scheduled`` (pymongo count), and the engine's queue and its ``.DQ`` hold no message, ready or unacknowledged:
nothing waits in the broker or in the worker.

(b) raw Dramatiq: a ``dramatiq`` worker (``bench/raw_worker.py``, same processes and threads) on its own queue;
RSS idle, then as many ``actor.send_with_options(delay=...)`` from this process, RSS again after ``SETTLE_S``, and
where the messages are: ready in ``<queue>.DQ`` (passive declare) or delivered to the worker and held unacked in
its memory (``rabbitmqctl``). Dramatiq's worker prefetches up to ``threads × 1000`` delayed messages, so its growth
is bounded by that prefetch, not by the number of delayed messages.

RSS is ``VmRSS`` summed over each command's process group (Dramatiq forks its worker processes): pages a fork still
shares with its parent count twice, so a group's figure is an upper bound; PSS (shared pages split among their
sharers) is reported beside it, and the JSON has each process's figures. Each repeat uses its own database and
the run its own namespace; every process is stopped and every queue (with ``.DQ``/``.XQ``) and the events exchange
deleted at the end, on error too. Figures are reported, not asserted; the verifications set the exit status.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from bench._batches import Batches, SubmitProgress, submit_batches
from bench._common import (
    ENGINEROOM,
    HOST,
    RESULTS_DIR,
    Comparison,
    Delta,
    Figure,
    PeakRss,
    RunContext,
    add_run_options,
    chunks,
    config_from_args,
    consumers_at_least,
    cpu_reading,
    database,
    delete_topology,
    group_processes,
    http_ok,
    mongo_client,
    parser_for,
    pss_reading,
    publish,
    queue_counts,
    raw_worker,
    rss_reading,
    run_report,
    running,
    unacked_counts,
    wait_until,
)
from engineroom.core.embedded import free_port
from engineroom.messaging.broker import MAX_PRIORITY
from engineroom.services.tokens import issue_token

DEFAULT_OUTPUT = RESULTS_DIR / "delayed.json"
ENGINE = "general"
#: ``POST /jobs/batch`` takes at most this many jobs.
BATCH_SIZE = 1000
#: Seconds between the last submit and the second RSS reading.
SETTLE_S = 5.0
#: Seconds of the idle windows whose CPU is measured, before the submits and after them.
IDLE_WINDOW_S = 10.0
#: The scheduler's leadership lease (``engineroom.scheduler.loop.LEADER_LEASE``): present once it sweeps.
LEADER_LEASE = "scheduler"
#: Targets from the brief, reported next to the figures (not asserted).
WORKER_GROWTH_TARGET_MIB = 20.0
IDLE_TOTAL_TARGET_MIB = 200.0
#: The processes of engineroom's idle total; the database is reported beside them.
ENGINEROOM_PROCESSES = ("api", "worker", "scheduler")


@dataclass(frozen=True)
class DelayedConfig:
    jobs: int
    delay_s: float
    concurrency: int
    processes: int
    threads: int
    repeat: int
    amqp_url: str
    #: Submitting (or enqueueing) stops starting new requests after this many seconds; the rate is still reported.
    submit_timeout_s: float


@dataclass(frozen=True)
class EngineroomSample:
    jobs: int
    accepted: int
    submit_s: float
    batch_latency_s: dict[str, float]
    rss_idle_mib: dict[str, float]
    #: Proportional set size: pages shared between processes (a fork and its parent) split among them.
    pss_idle_mib: dict[str, float]
    rss_peak_during_submit_mib: dict[str, float]
    rss_after_mib: dict[str, float]
    #: After the second idle window too: does anything keep growing while the jobs wait?
    rss_after_window_mib: dict[str, float]
    pss_after_mib: dict[str, float]
    #: Per group, each process (pid, RSS, PSS, command) when idle and after the submits.
    processes_idle: dict[str, list[dict[str, Any]]]
    processes_after: dict[str, list[dict[str, Any]]]
    cpu_idle_before_s: dict[str, float]
    cpu_submit_s: dict[str, float]
    cpu_idle_after_s: dict[str, float]
    scheduled_in_db: int
    jobs_in_db: int
    #: Ready messages in the engine's queue and in its ``.DQ`` (None: the queue does not exist).
    queue_ready: int | None
    delay_queue_ready: int | None
    #: Messages delivered to a consumer and not acknowledged, over both (None: ``rabbitmqctl`` unavailable).
    unacked: int | None

    @property
    def accepted_per_s(self) -> float:
        return self.accepted / self.submit_s

    @property
    def worker_growth_mib(self) -> float:
        return self.rss_after_mib["worker"] - self.rss_idle_mib["worker"]

    @property
    def idle_total_mib(self) -> float:
        return sum(self.rss_idle_mib[name] for name in ENGINEROOM_PROCESSES)

    @property
    def idle_total_pss_mib(self) -> float:
        return sum(self.pss_idle_mib[name] for name in ENGINEROOM_PROCESSES)


@dataclass(frozen=True)
class RawSample:
    messages: int
    enqueued: int
    enqueue_s: float
    delay_prefetch: int
    rss_idle_mib: float
    rss_peak_mib: float
    rss_after_mib: float
    processes_after: list[dict[str, Any]]
    dq_ready: int | None
    dq_unacked: int | None

    @property
    def enqueued_per_s(self) -> float:
        return self.enqueued / self.enqueue_s

    @property
    def growth_mib(self) -> float:
        return self.rss_after_mib - self.rss_idle_mib

    @property
    def held(self) -> int | None:
        """Messages the worker holds in memory: unacked if measured, else those sent and not ready in the queue."""
        if self.dq_unacked is not None:
            return self.dq_unacked
        return None if self.dq_ready is None else self.enqueued - self.dq_ready


# --- (a) engineroom ------------------------------------------------------------------------------------------


def _batch_sizes(jobs: int) -> Iterator[int]:
    return chunks(jobs, BATCH_SIZE)


async def submit_delayed(base_url: str, token: str, config: DelayedConfig) -> tuple[SubmitProgress, float]:
    """Every batch, ``config.concurrency`` in flight; returns the progress and the seconds it took."""
    job = {"task": f"{ENGINE}.demo", "payload": {"duration_s": 0, "steps": 1}, "delay_s": config.delay_s}
    batches = Batches(job, config.jobs, BATCH_SIZE, config.concurrency, config.submit_timeout_s)
    return await submit_batches(base_url, token, batches)


def _scheduler_leads(mongodb_url: str, db: str) -> bool:
    with mongo_client(mongodb_url) as client:
        return client[db]["leases"].find_one({"_id": LEADER_LEASE}) is not None


def _count_jobs(mongodb_url: str, db: str) -> tuple[int, int]:
    """``(scheduled jobs, all jobs)`` in the bench database."""
    with mongo_client(mongodb_url) as client:
        jobs = client[db]["jobs"]
        return jobs.count_documents({"state": "scheduled"}), jobs.count_documents({})


def _ready(amqp_url: str, queue: str) -> int | None:
    counts = queue_counts(amqp_url, queue)
    return None if counts is None else counts[0]


def _latency_spread(latencies: list[float]) -> dict[str, float]:
    """Percentiles of the batch latencies, and the mean of the first and of the last tenth (in completion order):
    whether inserts slow down as the collection grows."""
    if not latencies:
        return {}
    ordered, tenth = sorted(latencies), max(1, len(latencies) // 10)
    return {
        "p50": statistics.median(ordered),
        "p95": ordered[int(0.95 * (len(ordered) - 1))],
        "max": ordered[-1],
        "first_tenth_mean": statistics.mean(latencies[:tenth]),
        "last_tenth_mean": statistics.mean(latencies[-tenth:]),
    }


def _processes(groups: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    return {name: group_processes(pgid) for name, pgid in groups.items()}


def _idle_cpu(groups: dict[str, int]) -> dict[str, float]:
    cpu = Delta(cpu_reading(groups))
    time.sleep(IDLE_WINDOW_S)
    return cpu.since()


def measure_engineroom(ctx: RunContext[DelayedConfig], repeat: int) -> EngineroomSample:
    """Start the API, a worker and the scheduler on a fresh database, submit the delayed jobs, read, stop all."""
    config, settings, port = ctx.config, ctx.settings, free_port(HOST)
    db = f"delayed_{repeat}"
    env = ctx.engineroom_env(db)
    worker_argv = [*ENGINEROOM, "worker", "--engines", ENGINE]
    worker_argv += ["--processes", str(config.processes), "--threads", str(config.threads)]
    logs = {name: ctx.log(f"{name}-{repeat}") for name in ("api", "worker", "scheduler")}
    with ExitStack() as stack:
        api = stack.enter_context(running([*ENGINEROOM, "api", "--host", HOST, "--port", str(port)], logs["api"], env))
        worker = stack.enter_context(running(worker_argv, logs["worker"], env))
        scheduler = stack.enter_context(running([*ENGINEROOM, "scheduler"], logs["scheduler"], env))
        wait_until(lambda: http_ok(f"http://{HOST}:{port}/readyz"), "engineroom api", api, logs["api"])
        consuming = consumers_at_least(config.amqp_url, settings.queue_name(ENGINE), config.processes)
        wait_until(consuming, "engineroom worker", worker, logs["worker"])
        leads = partial(_scheduler_leads, ctx.mongodb_url, db)
        wait_until(leads, "engineroom scheduler", scheduler, logs["scheduler"])
        groups = {"api": api.pid, "worker": worker.pid, "scheduler": scheduler.pid, "secantusd": ctx.database_pid}

        cpu_idle_before = _idle_cpu(groups)
        rss_idle, pss_idle, processes_idle = rss_reading(groups), pss_reading(groups), _processes(groups)
        token = issue_token(settings, user_id="bench", tenant_id="bench", admin=True)
        cpu = Delta(cpu_reading(groups))
        with PeakRss(groups) as peak:
            progress, submit_s = asyncio.run(submit_delayed(f"http://{HOST}:{port}", token, config))
            cpu_submit = cpu.since()
            time.sleep(SETTLE_S)
        rss_after, pss_after, processes_after = rss_reading(groups), pss_reading(groups), _processes(groups)
        cpu_idle_after = _idle_cpu(groups)
        rss_after_window = rss_reading(groups)

        scheduled, total = _count_jobs(ctx.mongodb_url, db)
        queues = [settings.queue_name(ENGINE), f"{settings.queue_name(ENGINE)}.DQ"]
        queue_ready, delay_queue_ready = (_ready(config.amqp_url, queue) for queue in queues)
        unacked = unacked_counts(config.amqp_url, queues)
        return EngineroomSample(
            jobs=config.jobs,
            accepted=progress.accepted,
            submit_s=submit_s,
            batch_latency_s=_latency_spread(progress.latencies),
            rss_idle_mib=rss_idle,
            pss_idle_mib=pss_idle,
            rss_peak_during_submit_mib=peak.peak,
            rss_after_mib=rss_after,
            rss_after_window_mib=rss_after_window,
            pss_after_mib=pss_after,
            processes_idle=processes_idle,
            processes_after=processes_after,
            cpu_idle_before_s=cpu_idle_before,
            cpu_submit_s=cpu_submit,
            cpu_idle_after_s=cpu_idle_after,
            scheduled_in_db=scheduled,
            jobs_in_db=total,
            queue_ready=queue_ready,
            delay_queue_ready=delay_queue_ready,
            unacked=None if unacked is None else sum(unacked.values()),
        )


# --- (b) raw Dramatiq ----------------------------------------------------------------------------------------


def _noop() -> None:
    """The sending side's stand-in for ``bench.raw_worker``'s actor: same name and queue, never run here."""


def enqueue_delayed(ctx: RunContext[DelayedConfig]) -> tuple[int, float]:
    """Send the delayed messages through Dramatiq's own API; returns how many were sent and the seconds it took."""
    config = ctx.config
    broker = RabbitmqBroker(url=config.amqp_url, max_priority=MAX_PRIORITY)
    declare = dramatiq.actor(broker=broker, actor_name=ctx.raw_queue, queue_name=ctx.raw_queue, max_retries=0)
    actor, delay_ms = declare(_noop), int(config.delay_s * 1000)
    deadline = time.monotonic() + config.submit_timeout_s
    start, sent = time.perf_counter(), 0
    try:
        for size in _batch_sizes(config.jobs):  # the clock is read once per batch
            if time.monotonic() > deadline:
                break
            for _ in range(size):
                actor.send_with_options(delay=delay_ms)
            sent += size
    finally:
        broker.close()  # on error too; it also flushes what pika still buffers, so it is timed
    return sent, time.perf_counter() - start


def _delay_prefetch(threads: int) -> int:
    """Delayed messages one Dramatiq worker process takes from a ``.DQ`` at most (``dramatiq.worker``)."""
    return int(os.environ.get("dramatiq_delay_queue_prefetch", 0)) or min(threads * 1000, 65535)


def measure_raw(ctx: RunContext[DelayedConfig], repeat: int) -> RawSample:
    """Start a plain ``dramatiq`` worker, send it the delayed messages, read its RSS and the queues, stop it."""
    config = ctx.config
    with raw_worker(ctx, repeat, ctx.work_dir / f"raw-{repeat}.times") as worker:
        time.sleep(SETTLE_S)
        groups = {"worker": worker.pid}
        rss_idle = rss_reading(groups)["worker"]
        with PeakRss(groups) as peak:
            enqueued, enqueue_s = enqueue_delayed(ctx)
            time.sleep(SETTLE_S)
        rss_after, processes_after = rss_reading(groups)["worker"], group_processes(worker.pid)
        delay_queue = f"{ctx.raw_queue}.DQ"
        unacked = unacked_counts(config.amqp_url, [delay_queue])
        return RawSample(
            messages=config.jobs,
            enqueued=enqueued,
            enqueue_s=enqueue_s,
            delay_prefetch=config.processes * _delay_prefetch(config.threads),
            rss_idle_mib=rss_idle,
            rss_peak_mib=peak.peak["worker"],
            rss_after_mib=rss_after,
            processes_after=processes_after,
            dq_ready=_ready(config.amqp_url, delay_queue),
            dq_unacked=None if unacked is None else unacked.get(delay_queue),
        )


# --- the run -------------------------------------------------------------------------------------------------


def run(config: DelayedConfig) -> dict[str, Any]:
    work_dir = Path(tempfile.mkdtemp(prefix="engineroom-bench-delayed-"))
    print(f"logs: {work_dir}")
    engineroom_samples: list[EngineroomSample] = []
    raw_samples: list[RawSample] = []
    load_before = os.getloadavg()
    with ExitStack() as stack:
        mongodb_url, database_pid = stack.enter_context(database(work_dir))
        ctx = RunContext(
            config, secrets.token_hex(4), work_dir, mongodb_url, database_pid, secrets.token_urlsafe(32), "delayed-raw"
        )
        stack.callback(delete_topology, ctx.settings, [ctx.raw_queue])
        print(f"namespace: {ctx.settings.namespace}  raw queue: {ctx.raw_queue}")
        for repeat in range(1, config.repeat + 1):
            try:
                engineroom_samples.append(sample := measure_engineroom(ctx, repeat))
                print(
                    f"  #{repeat} engineroom {sample.accepted}/{sample.jobs} accepted, {sample.accepted_per_s:.1f}/s;"
                    f" worker RSS {sample.rss_idle_mib['worker']:.1f} -> {sample.rss_after_mib['worker']:.1f} MiB"
                )
                raw_samples.append(raw := measure_raw(ctx, repeat))
                print(
                    f"  #{repeat} raw        {raw.enqueued}/{raw.messages} sent, {raw.enqueued_per_s:.1f}/s;"
                    f" worker RSS {raw.rss_idle_mib:.1f} -> {raw.rss_after_mib:.1f} MiB, holds {raw.held}"
                )
            finally:
                delete_topology(ctx.settings, [ctx.raw_queue])  # the next repeat starts with empty queues
    result = report(config, work_dir, engineroom_samples, raw_samples)
    return {**result, "cpus": os.cpu_count(), "loadavg_1_5_15": {"before": load_before, "after": os.getloadavg()}}


# --- the report ----------------------------------------------------------------------------------------------

PROCESSES = ("api", "worker", "scheduler", "secantusd")


def _known(values: list[int | None]) -> list[float]:
    """Unmeasurable values (None) reported as -1."""
    return [-1.0 if value is None else float(value) for value in values]


def _per_process(label: str, readings: list[dict[str, float]]) -> list[Figure]:
    return [(f"{label} {name}", [reading[name] for reading in readings]) for name in PROCESSES]


def figures(engineroom: list[EngineroomSample], raw: list[RawSample]) -> list[Figure]:
    idle_total = f"engineroom RSS idle MiB api+worker+scheduler (target <= {IDLE_TOTAL_TARGET_MIB:.0f})"
    growth = f"engineroom worker RSS growth MiB (target < {WORKER_GROWTH_TARGET_MIB:.0f})"
    window = f"{IDLE_WINDOW_S:.0f}s"
    return [
        ("engineroom jobs accepted", [s.accepted for s in engineroom]),
        ("engineroom submit accepted jobs/s", [s.accepted_per_s for s in engineroom]),
        ("engineroom batch latency p50 s", [s.batch_latency_s.get("p50", 0.0) for s in engineroom]),
        ("engineroom batch latency max s", [s.batch_latency_s.get("max", 0.0) for s in engineroom]),
        (
            "engineroom batch latency first 10% mean s",
            [s.batch_latency_s.get("first_tenth_mean", 0.0) for s in engineroom],
        ),
        (
            "engineroom batch latency last 10% mean s",
            [s.batch_latency_s.get("last_tenth_mean", 0.0) for s in engineroom],
        ),
        *_per_process("engineroom RSS idle MiB", [s.rss_idle_mib for s in engineroom]),
        (idle_total, [s.idle_total_mib for s in engineroom]),
        *_per_process("engineroom PSS idle MiB", [s.pss_idle_mib for s in engineroom]),
        ("engineroom PSS idle MiB api+worker+scheduler", [s.idle_total_pss_mib for s in engineroom]),
        *_per_process("engineroom RSS peak during submit MiB", [s.rss_peak_during_submit_mib for s in engineroom]),
        *_per_process(f"engineroom RSS after +{SETTLE_S:.0f}s MiB", [s.rss_after_mib for s in engineroom]),
        (growth, [s.worker_growth_mib for s in engineroom]),
        *_per_process(f"engineroom PSS after +{SETTLE_S:.0f}s MiB", [s.pss_after_mib for s in engineroom]),
        *_per_process(f"engineroom RSS after idle {window} MiB", [s.rss_after_window_mib for s in engineroom]),
        *_per_process(f"engineroom cpu-s idle {window} before", [s.cpu_idle_before_s for s in engineroom]),
        *_per_process("engineroom cpu-s during submit", [s.cpu_submit_s for s in engineroom]),
        *_per_process(f"engineroom cpu-s idle {window} after", [s.cpu_idle_after_s for s in engineroom]),
        ("engineroom scheduled jobs in db", [s.scheduled_in_db for s in engineroom]),
        ("engineroom engine queue ready msgs", _known([s.queue_ready for s in engineroom])),
        ("engineroom engine .DQ ready msgs", _known([s.delay_queue_ready for s in engineroom])),
        ("engineroom engine queues unacked msgs", _known([s.unacked for s in engineroom])),
        ("raw messages sent", [s.enqueued for s in raw]),
        ("raw send_with_options(delay) msgs/s", [s.enqueued_per_s for s in raw]),
        ("raw worker RSS idle MiB", [s.rss_idle_mib for s in raw]),
        ("raw worker RSS peak MiB", [s.rss_peak_mib for s in raw]),
        (f"raw worker RSS after +{SETTLE_S:.0f}s MiB", [s.rss_after_mib for s in raw]),
        ("raw worker RSS growth MiB", [s.growth_mib for s in raw]),
        ("raw .DQ ready msgs (in RabbitMQ)", _known([s.dq_ready for s in raw])),
        ("raw .DQ held by worker (unacked)", _known([s.held for s in raw])),
        ("raw delay prefetch (threads x 1000)", [s.delay_prefetch for s in raw]),
        ("raw RSS growth KiB per held msg", [s.growth_mib * 1024 / s.held if s.held else 0.0 for s in raw]),
    ]


def checks(engineroom: list[EngineroomSample], raw: list[RawSample]) -> dict[str, bool]:
    """The verifications: every accepted job waits in MongoDB and nothing in RabbitMQ; no raw message got lost."""
    found: dict[str, bool] = {}
    for repeat, sample in enumerate(engineroom, start=1):
        found[f"#{repeat} engineroom: every accepted job is scheduled in the db"] = (
            sample.scheduled_in_db == sample.jobs_in_db == sample.accepted
        )
        found[f"#{repeat} engineroom: engine queue and .DQ hold 0 messages"] = (
            sample.queue_ready == 0 and sample.delay_queue_ready == 0 and sample.unacked in (0, None)
        )
    for repeat, raw_sample in enumerate(raw, start=1):
        if raw_sample.dq_ready is not None and raw_sample.dq_unacked is not None:
            found[f"#{repeat} raw: .DQ ready + held = sent"] = (
                raw_sample.dq_ready + raw_sample.dq_unacked == raw_sample.enqueued
            )
    return found


def targets(engineroom: list[EngineroomSample]) -> dict[str, dict[str, float | bool]]:
    """The brief's memory targets, median over the repeats: reported, not asserted."""
    growth = statistics.median(s.worker_growth_mib for s in engineroom)
    idle_total = statistics.median(s.idle_total_mib for s in engineroom)
    idle_total_pss = statistics.median(s.idle_total_pss_mib for s in engineroom)
    return {
        "worker RSS growth MiB": {
            "value": growth,
            "target": WORKER_GROWTH_TARGET_MIB,
            "met": growth < WORKER_GROWTH_TARGET_MIB,
        },
        "idle RSS api+worker+scheduler MiB": {
            "value": idle_total,
            "target": IDLE_TOTAL_TARGET_MIB,
            "met": idle_total <= IDLE_TOTAL_TARGET_MIB,
            "pss": idle_total_pss,
        },
    }


def report(
    config: DelayedConfig, work_dir: Path, engineroom: list[EngineroomSample], raw: list[RawSample]
) -> dict[str, Any]:
    return {
        **run_report(config, work_dir, engineroom, raw, figures(engineroom, raw)),
        "targets": targets(engineroom),
        "checks": checks(engineroom, raw),
        "incomplete": [
            f"#{repeat} {what}: {done}/{config.jobs} within {config.submit_timeout_s} s"
            for repeat, (e, r) in enumerate(zip(engineroom, raw, strict=True), start=1)
            for what, done in (("engineroom submits", e.accepted), ("raw sends", r.enqueued))
            if done < config.jobs
        ],
    }


def comparisons(result: dict[str, Any]) -> list[Comparison]:
    """The suite's memory lines, from ``targets`` and ``summary``: worker growth holding the delayed jobs, against
    raw Dramatiq's worker holding as many delayed messages; the idle total, against an idle raw worker."""
    summary, jobs, found = result["summary"], result["config"]["jobs"], result["targets"]
    growth, idle = found["worker RSS growth MiB"], found["idle RSS api+worker+scheduler MiB"]
    growth_row = f"engineroom worker RSS growth MiB (target < {WORKER_GROWTH_TARGET_MIB:.0f})"
    idle_row = f"engineroom RSS idle MiB api+worker+scheduler (target <= {IDLE_TOTAL_TARGET_MIB:.0f})"
    return [
        Comparison(
            figure=f"memory: worker RSS growth MiB ({jobs} delayed jobs)",
            engineroom=summary[growth_row],
            baseline=summary["raw worker RSS growth MiB"],
            baseline_is="raw Dramatiq worker after as many send_with_options(delay=...)",
            target=f"< {WORKER_GROWTH_TARGET_MIB:.0f} MiB",
            met=bool(growth["met"]),
        ),
        Comparison(
            figure="memory: idle RSS MiB api+worker+scheduler",
            engineroom=summary[idle_row],
            baseline=summary["raw worker RSS idle MiB"],
            baseline_is="an idle raw Dramatiq worker (same processes and threads)",
            target=f"<= {IDLE_TOTAL_TARGET_MIB:.0f} MiB",
            met=bool(idle["met"]),
        ),
    ]


def parse_args(argv: list[str] | None) -> tuple[DelayedConfig, Path]:
    parser = parser_for("delayed", __doc__)
    add_run_options(parser, repeat=1, output=DEFAULT_OUTPUT)
    parser.add_argument("--jobs", type=int, default=100_000, help="delayed jobs, engineroom and raw alike")
    parser.add_argument("--delay-s", type=float, default=3600.0)
    parser.add_argument("--concurrency", type=int, default=4, help="batch requests in flight")
    parser.add_argument("--submit-timeout-s", type=float, default=180.0, help="per side; then it reports what it did")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.repeat < 1 or args.concurrency < 1:
        parser.error("--jobs, --repeat and --concurrency must be at least 1")
    return config_from_args(DelayedConfig, args), args.output


def main(argv: list[str] | None = None) -> int:
    config, output = parse_args(argv)
    print(
        f"delayed: {config.jobs} jobs (delay {config.delay_s:.0f} s) x {config.repeat} repeats,"
        f" workers {config.processes}p x {config.threads}t"
    )
    result = run(config)
    lines = []
    for name, target in result["targets"].items():
        verdict = "met" if target["met"] else "MISSED"
        pss = f" (PSS {target['pss']:.1f})" if "pss" in target else ""
        lines.append(f"target {name}: {target['value']:.1f}{pss} vs {target['target']:.0f} -> {verdict}")
    lines += [f"incomplete: {line}" for line in result["incomplete"]]
    lines += [f"check {'ok    ' if ok else 'FAILED'} {name}" for name, ok in result["checks"].items()]
    publish(output, result, lines)
    return 0 if all(result["checks"].values()) else 1
