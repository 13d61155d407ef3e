"""Soak: a bounded mixed run of the whole stack (not in CI), reporting memory over time and stuck jobs.

Starts SecantusDB, ``engineroom api``, ``engineroom worker`` and ``engineroom scheduler`` (each its own process
group), lifts ``general``'s cluster-wide limit to the worker's threads, then for ``--minutes`` submits a seeded
mix at ``--rate``/s (``bench/_soak_load.py``): ``general.demo`` jobs of 0-2 s with 1-5 progress steps, some
failing for good, some failing transiently then succeeding, some exhausting their retries, some delayed (up to
20 s), some cancelled mid-run, and a few three-step workflows; ``--listeners`` WebSockets stay connected
throughout (one of them an admin's), and the queue is paused for ``--pause-for-s`` every ``--pause-every-s``.

Every ``--sample-s`` it reads each process group's RSS (``/proc``, the group summed: the worker's forks count)
and the jobs by state (straight from the database, which serves this run only). When submissions stop, the
queue is resumed and it waits up to ``--grace-s`` for every job and workflow to finish; whatever has not is
stuck (no job's own life is that long: at most 2 s of work, a 20 s delay and a few seconds of retry backoff),
and listed. Memory growth per process is the last sample against the first after ``--warmup-s``. A table over
time and a summary are printed, the whole report is written as JSON, and the exit code is 1 if anything was
stuck. Subprocess logs go to a temporary directory, whose path is printed, with their warning/error counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench._common import (
    ENGINEROOM,
    HOST,
    RESULTS_DIR,
    RunContext,
    auth,
    consumers_at_least,
    database,
    delete_topology,
    http_ok,
    log_findings,
    mongo_client,
    print_log_findings,
    rss_reading,
    running,
    wait_until,
    write_result,
)
from bench._soak_load import ENGINE, EXPECTED, Load, LoadStats, listen
from engineroom.core.config import Settings
from engineroom.core.embedded import free_port
from engineroom.services.tokens import issue_token

DEFAULT_OUTPUT = RESULTS_DIR / "soak.json"
DB = "soak"
TENANT = "soak"
TERMINAL = ("completed", "failed", "cancelled")
#: The scheduler's leadership lease (``engineroom.scheduler.loop.LEADER_LEASE``): present once it sweeps.
LEADER_LEASE = "scheduler"
#: Seconds between looks at the database while waiting for the last jobs.
SETTLE_POLL_S = 2.0
#: Seconds the WebSocket listeners get to connect before the load starts (so each hears all of it).
LISTENERS_READY_S = 30.0


@dataclass(frozen=True)
class SoakConfig:
    minutes: float
    rate: float
    listeners: int
    processes: int
    threads: int
    sample_s: float
    warmup_s: float
    grace_s: float
    pause_every_s: float
    pause_for_s: float
    seed: int
    amqp_url: str

    @property
    def duration_s(self) -> float:
        return self.minutes * 60


# --- readings ------------------------------------------------------------------------------------------------


def job_states(mongodb_url: str) -> dict[str, int]:
    """Jobs per state, and ``workflows running``."""
    with mongo_client(mongodb_url) as client:
        db = client[DB]
        states = {
            row["_id"]: row["n"] for row in db["jobs"].aggregate([{"$group": {"_id": "$state", "n": {"$sum": 1}}}])
        }
        states["workflows running"] = db["workflows"].count_documents({"state": "running"})
        return states


def unfinished(states: dict[str, int]) -> int:
    return sum(count for state, count in states.items() if state not in TERMINAL)


class Sampler:
    """Takes a sample every ``every_s`` in the background: seconds since start, RSS per group, jobs by state."""

    def __init__(self, groups: dict[str, int], mongodb_url: str, stats: LoadStats, every_s: float) -> None:
        self.groups, self.mongodb_url, self.stats, self.every_s = groups, mongodb_url, stats, every_s
        self.samples: list[dict[str, Any]] = []
        self.phase = "load"
        self.start = time.monotonic()

    def take(self) -> dict[str, Any]:
        sample = {
            "t_s": round(time.monotonic() - self.start, 1),
            "phase": self.phase,
            "rss_mib": rss_reading(self.groups),
            "states": job_states(self.mongodb_url),
            "submitted": sum(self.stats.submitted.values()),
            "ws_frames": sum(self.stats.ws_frames.values()),
        }
        self.samples.append(sample)
        return sample

    async def run(self) -> None:
        while True:
            print(row(await asyncio.to_thread(self.take), list(self.groups)), flush=True)
            await asyncio.sleep(self.every_s)


# --- the run -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    """The running engineroom: where the API listens, the process groups, the tokens."""

    base_url: str
    groups: dict[str, int]
    user_token: str
    admin_token: str


@contextlib.contextmanager
def stack(ctx: RunContext[SoakConfig]) -> Iterator[Stack]:
    """Start the API, a worker and the scheduler; wait until each is ready; stop all on leaving."""
    config, port = ctx.config, free_port(HOST)
    # The worker's metrics on a free port: the default, 9191, may be taken by another worker on the machine.
    env = {**ctx.engineroom_env(DB), "ENGINEROOM_WORKER_METRICS_PORT": str(free_port(HOST))}
    logs = {name: ctx.log(name) for name in ("api", "worker", "scheduler")}
    worker_argv = [*ENGINEROOM, "worker", "--processes", str(config.processes), "--threads", str(config.threads)]
    with contextlib.ExitStack() as processes:
        api = processes.enter_context(
            running([*ENGINEROOM, "api", "--host", HOST, "--port", str(port)], logs["api"], env)
        )
        worker = processes.enter_context(running(worker_argv, logs["worker"], env))
        scheduler = processes.enter_context(running([*ENGINEROOM, "scheduler"], logs["scheduler"], env))
        wait_until(lambda: http_ok(f"http://{HOST}:{port}/readyz"), "engineroom api", api, logs["api"])
        consuming = consumers_at_least(config.amqp_url, ctx.settings.queue_name(ENGINE), config.processes)
        wait_until(consuming, "engineroom worker", worker, logs["worker"])
        wait_until(lambda: _scheduler_leads(ctx.mongodb_url), "engineroom scheduler", scheduler, logs["scheduler"])
        admin = issue_token(ctx.settings, user_id="soak-admin", tenant_id=TENANT, admin=True)
        # Let every worker thread run a job: general's default cluster-wide limit is 2.
        limits = {"max_concurrency": config.processes * config.threads}
        httpx.put(f"http://{HOST}:{port}/queues/{ENGINE}/limits", json=limits, headers=auth(admin)).raise_for_status()
        groups = {"api": api.pid, "worker": worker.pid, "scheduler": scheduler.pid, "secantusd": ctx.database_pid}
        user = issue_token(ctx.settings, user_id="soak-user", tenant_id=TENANT)
        yield Stack(f"http://{HOST}:{port}", groups, user, admin)


def _scheduler_leads(mongodb_url: str) -> bool:
    with mongo_client(mongodb_url) as client:
        return client[DB]["leases"].find_one({"_id": LEADER_LEASE}) is not None


async def soak(ctx: RunContext[SoakConfig], running_stack: Stack) -> tuple[LoadStats, Sampler, float]:
    """Load for the duration, then settle for at most the grace period; returns what happened and when
    submissions stopped (seconds since the sampler's start)."""
    config, stats = ctx.config, LoadStats()
    sampler = Sampler(running_stack.groups, ctx.mongodb_url, stats, config.sample_s)
    stop = asyncio.Event()
    ws_url = running_stack.base_url.replace("http://", "ws://") + "/ws?token="
    tokens = [running_stack.admin_token] + [running_stack.user_token] * max(0, config.listeners - 1)
    names = ["admin", *(f"user{number}" for number in range(1, config.listeners))][: config.listeners]
    ready = {name: asyncio.Event() for name in names}
    listeners = [
        asyncio.create_task(listen(name, ws_url + token, stats, stop, ready[name]))
        for name, token in zip(names, tokens, strict=False)
    ]
    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in ready.values())), LISTENERS_READY_S)
    sampling = asyncio.create_task(sampler.run())
    headers = auth(running_stack.user_token)
    async with httpx.AsyncClient(base_url=running_stack.base_url, headers=headers, timeout=30) as client:
        load = Load(client, running_stack.admin_token, stats, config.seed)
        until = time.monotonic() + config.duration_s
        pauses = asyncio.create_task(load.pauses(config.pause_every_s, config.pause_for_s, until))
        await load.run(config.rate, until)
        stopped_at = time.monotonic() - sampler.start
        await pauses  # it ends before ``until``, its queue resumed
        sampler.phase = "grace"
        await settle(ctx.mongodb_url, config.grace_s)
    stop.set()
    await asyncio.gather(*listeners, return_exceptions=True)
    sampling.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampling
    print(row(await asyncio.to_thread(sampler.take), list(running_stack.groups)), flush=True)
    return stats, sampler, stopped_at


async def settle(mongodb_url: str, grace_s: float) -> None:
    """Wait until no job or workflow is unfinished, or ``grace_s`` passed."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and unfinished(await asyncio.to_thread(job_states, mongodb_url)):
        await asyncio.sleep(SETTLE_POLL_S)


# --- the findings --------------------------------------------------------------------------------------------


def stuck_jobs(mongodb_url: str, kinds: dict[str, str]) -> list[dict[str, Any]]:
    """Every job not finished, with what tells why: its kind, state, attempts, age and last history entry."""
    now = datetime.now(UTC)
    with mongo_client(mongodb_url) as client:
        found = client[DB]["jobs"].find({"state": {"$nin": list(TERMINAL)}})
        return [
            {
                "id": job["_id"],
                "kind": kinds.get(job["_id"], "workflow step" if job.get("workflow_id") else "?"),
                "state": job["state"],
                "attempts": job.get("attempts"),
                "age_s": round((now - job["created_at"].replace(tzinfo=UTC)).total_seconds(), 1),
                "parked": job.get("parked"),
                "needs_dispatch": job.get("needs_dispatch"),
                "last_history": (job.get("history") or [None])[-1],
            }
            for job in found
        ]


def outcomes(mongodb_url: str, stats: LoadStats) -> dict[str, dict[str, int]]:
    """Final states by kind (workflows by their own state)."""
    with mongo_client(mongodb_url) as client:
        db = client[DB]
        states = {job["_id"]: job["state"] for job in db["jobs"].find({}, {"state": 1})}
        workflows = Counter(wf["state"] for wf in db["workflows"].find({"_id": {"$in": stats.workflow_ids}}))
    by_kind: dict[str, Counter[str]] = {}
    for job_id, kind in stats.job_kinds.items():
        by_kind.setdefault(kind, Counter())[states.get(job_id, "missing")] += 1
    return {**{kind: dict(counts) for kind, counts in by_kind.items()}, "workflow": dict(workflows)}


def unexpected(by_kind: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The outcomes a kind should not reach (say, a ``fail`` job that completed)."""
    found = {kind: {s: n for s, n in states.items() if s not in EXPECTED[kind]} for kind, states in by_kind.items()}
    return {kind: states for kind, states in found.items() if states}


def growth(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, dict[str, float]]:
    """RSS per group: the first sample at or after ``warmup_s`` against the last."""
    after = [sample for sample in samples if sample["t_s"] >= warmup_s] or samples[-1:]
    first, last = after[0], samples[-1]
    return {
        name: {
            "first_mib": first["rss_mib"][name],
            "last_mib": last["rss_mib"][name],
            "growth_mib": round(last["rss_mib"][name] - first["rss_mib"][name], 1),
            "from_t_s": first["t_s"],
            "to_t_s": last["t_s"],
        }
        for name in last["rss_mib"]
    }


def row(sample: dict[str, Any], groups: list[str]) -> str:
    """One line of the table over time."""
    rss = "".join(f"{sample['rss_mib'][name]:>18.1f}" for name in groups)
    states = " ".join(f"{state}={count}" for state, count in sorted(sample["states"].items()) if count)
    return f"{sample['t_s']:>7.1f} {sample['phase']:<6}{rss}{sample['submitted']:>10}  {states}"


def header(groups: list[str]) -> str:
    return (
        f"{'t_s':>7} {'phase':<6}" + "".join(f"{name + ' RSS MiB':>18}" for name in groups) + f"{'submitted':>10}  jobs"
    )


def summary(result: dict[str, Any]) -> str:
    load = result["load"]
    lines = [
        f"submitted: {sum(load['submitted'].values())} {dict(load['submitted'])} over {result['stopped_at_s']:.0f} s"
        f" ({load['behind']} starts behind schedule), queue pauses: {load['pauses']}",
        f"HTTP answers: {dict(sorted(load['http'].items()))}",
        f"WebSocket frames: {dict(load['ws_frames'])}; closes: {len(load['ws_closed'])}",
        f"WebSocket frames per listener: {load['ws_by_listener']}",
        f"outcomes by kind: {result['outcomes']}",
        f"unexpected outcomes: {result['unexpected'] or 'none'}",
        "RSS growth after warm-up (MiB): "
        + ", ".join(
            f"{name} {g['first_mib']}->{g['last_mib']} ({g['growth_mib']:+})" for name, g in result["growth"].items()
        ),
        f"stuck jobs: {len(result['stuck'])}" + "".join(f"\n  {job}" for job in result["stuck"][:20]),
        f"workflows still running: {result['workflows_running']}",
    ]
    return "\n".join(lines)


def run(config: SoakConfig) -> dict[str, Any]:
    work_dir = Path(tempfile.mkdtemp(prefix="engineroom-soak-"))
    print(f"logs: {work_dir}")
    with contextlib.ExitStack() as resources:
        mongodb_url, database_pid = resources.enter_context(database(work_dir))
        ctx = RunContext(config, secrets.token_hex(4), work_dir, mongodb_url, database_pid, secrets.token_urlsafe(32))
        resources.callback(delete_topology, ctx.settings)
        running_stack = resources.enter_context(stack(ctx))
        print(header(list(running_stack.groups)))
        stats, sampler, stopped_at = asyncio.run(soak(ctx, running_stack))
        stuck = stuck_jobs(mongodb_url, stats.job_kinds)
        by_kind = outcomes(mongodb_url, stats)
        workflows_running = sampler.samples[-1]["states"].get("workflows running", 0)
    return {
        "at": datetime.now(UTC).isoformat(),
        "config": asdict(config),
        "stopped_at_s": stopped_at,
        "samples": sampler.samples,
        "growth": growth(sampler.samples, config.warmup_s),
        "load": stats.report(),
        "outcomes": by_kind,
        "unexpected": unexpected(by_kind),
        "stuck": stuck,
        "workflows_running": workflows_running,
        "cpus": os.cpu_count(),
        "log_dir": str(work_dir),
        "logs": log_findings(work_dir),
    }


def parse_args(argv: list[str] | None) -> tuple[SoakConfig, Path]:
    parser = argparse.ArgumentParser(
        prog="python -m bench soak", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of submissions")
    parser.add_argument("--rate", type=float, default=2.0, help="submissions per second (jobs or workflows)")
    parser.add_argument("--listeners", type=int, default=5, help="WebSockets held open (the first an admin's)")
    parser.add_argument("--processes", type=int, default=1, help="worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process")
    parser.add_argument("--sample-s", type=float, help="seconds between samples (default: duration/12, 5 to 30)")
    parser.add_argument("--warmup-s", type=float, help="RSS growth counts from here (default: 20%% of it, <= 120)")
    parser.add_argument("--grace-s", type=float, default=60.0, help="after submissions, before jobs count as stuck")
    parser.add_argument("--pause-every-s", type=float, help="pause the queue this often (default: duration/2, <= 180)")
    parser.add_argument("--pause-for-s", type=float, default=10.0, help="seconds each pause lasts")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--amqp-url", default=os.environ.get("ENGINEROOM_AMQP_URL", Settings().amqp_url))
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    duration_s = args.minutes * 60
    config = SoakConfig(
        minutes=args.minutes,
        rate=args.rate,
        listeners=args.listeners,
        processes=args.processes,
        threads=args.threads,
        sample_s=args.sample_s or max(5.0, min(30.0, duration_s / 12)),
        warmup_s=args.warmup_s if args.warmup_s is not None else min(120.0, duration_s * 0.2),
        grace_s=args.grace_s,
        pause_every_s=args.pause_every_s or min(180.0, duration_s / 2),
        pause_for_s=args.pause_for_s,
        seed=args.seed,
        amqp_url=args.amqp_url,
    )
    return config, args.output


def main(argv: list[str] | None = None) -> int:
    config, output = parse_args(argv)
    print(
        f"soak: {config.minutes:g} min at {config.rate:g} submissions/s, {config.listeners} WebSockets, worker "
        f"{config.processes}p x {config.threads}t, queue paused {config.pause_for_s:g} s "
        f"every {config.pause_every_s:g} s"
    )
    result = run(config)
    write_result(output, result)
    print(summary(result))
    print_log_findings(result)
    print(f"written: {output}")
    return 1 if result["stuck"] or result["workflows_running"] else 0
