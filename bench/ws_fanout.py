"""WebSocket fan-out benchmark: events/s delivered and event latency with 1,000 sockets on one gateway.

(a) engineroom: a real ``engineroom api`` process (against SecantusDB and RabbitMQ) with ``--clients`` WebSockets
spread over ``--users`` users (socket i belongs to user i mod users, each with its own token), opened by
``--client-processes`` processes (``bench/_ws_clients.py``) so the clients are not the bottleneck of one core. This
process publishes ``--rate`` events/s for ``--duration-s`` straight to the events exchange with
``RabbitEventBus.publish``, as workers do, each addressed to one user (tenant ``bench``), round robin: so the figure
is the gateway's fan-out (consume, validate, authorize, buffer, serialize, send), not job execution. Each event is
due on every socket of its user: deliveries expected = events x sockets per user.

(b) baseline: ``bench/ws_baseline.py``, a bare Starlette app under the same uvicorn, consuming the same exchange the
same way and sending each body to its user's sockets; no token, no validation, no per-socket buffer. Same clients,
same rate, same events.

Latency is receipt time minus the event's ``ts`` (stamped just before it is published; one clock). Deliveries/s is
deliveries received over the time from the first publish to the last receipt. Gateway RSS is read from ``/proc``:
before clients, with every client connected, and the peak while events flow. Clients offer permessage-deflate, as
browsers do. Subprocess logs go to a temporary directory, whose path is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._common import (
    ENGINEROOM,
    HOST,
    REPO_ROOT,
    RESULTS_DIR,
    Delta,
    PeakRss,
    RunContext,
    cpu_reading,
    database,
    delete_topology,
    http_ok,
    log_findings,
    port_open,
    print_log_findings,
    process_env,
    rss_reading,
    running,
    wait_until,
    write_result,
)
from engineroom.core.config import Settings
from engineroom.core.embedded import free_port
from engineroom.core.tokens import issue_token
from engineroom.models.event import EventType, new_event
from engineroom.notifications.bus import RabbitEventBus

DEFAULT_OUTPUT = RESULTS_DIR / "ws_fanout.json"
TENANT = "bench"
#: Seconds the client processes get to open every socket.
CONNECT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class FanoutConfig:
    clients: int
    users: int
    rate: float
    duration_s: float
    drain_s: float
    client_processes: int
    compression: bool
    amqp_url: str


@dataclass(frozen=True)
class Phase:
    server: str
    clients: int
    published: int
    publish_s: float
    expected: int
    received: int
    deliveries_per_s: float
    latency_ms: dict[str, float]
    server_rss_mib: dict[str, float]
    cpu_s: dict[str, float]
    closed_early: int


def user_of(socket_index: int, config: FanoutConfig) -> str:
    return f"user{socket_index % config.users}"


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ranked = sorted(values)

    def at(share: float) -> float:
        return round(ranked[min(len(ranked) - 1, int(share * len(ranked)))], 2)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(ranked[-1], 2)}


@contextlib.contextmanager
def client_processes(
    urls: list[str], config: FanoutConfig, work_dir: Path, tag: str
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start the client processes (socket i in process i mod n) and wait until every socket is registered."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for number in range(config.client_processes):
            plan = work_dir / f"{tag}-clients-{number}.json"
            mine = urls[number :: config.client_processes]
            plan.write_text(json.dumps({"urls": mine, "compression": config.compression}))
            argv = [sys.executable, "-m", "bench._ws_clients", str(plan)]
            with (work_dir / f"{tag}-clients-{number}.log").open("ab") as log:
                pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": log}
                processes.append(subprocess.Popen(argv, **pipes, cwd=REPO_ROOT, env=process_env({})))
        for process in processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if line.strip() != b"ready":
                raise RuntimeError(f"a client process did not get ready ({line!r}); see {work_dir}")
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()


def publish(bus: RabbitEventBus, config: FanoutConfig) -> tuple[Counter[str], float, float]:
    """``rate`` events/s for ``duration_s``, round robin over the users; returns events per user, start, end."""
    total = int(config.rate * config.duration_s)
    per_user: Counter[str] = Counter()
    start = time.time()
    for number in range(total):
        ahead_s = start + number / config.rate - time.time()
        if ahead_s > 0:
            time.sleep(ahead_s)
        user = user_of(number, config)
        data = {"state": "running", "percent": number % 100, "message": "bench", "engine": "general"}
        event = new_event(EventType.JOB_PROGRESS, tenant_id=TENANT, user_id=user, job_id=f"job{number}", data=data)
        bus.publish(event)
        per_user[user] += 1
    return per_user, start, time.time()


def collect(
    processes: list[subprocess.Popen[bytes]], per_user: Counter[str], config: FanoutConfig, deadline: float
) -> list[dict[str, Any]]:
    """Tell each client process how many events its sockets are due, then read its report."""
    for number, process in enumerate(processes):
        assert process.stdin is not None
        sockets = range(number, config.clients, config.client_processes)
        expected = sum(per_user[user_of(index, config)] for index in sockets)
        process.stdin.write(f"expect {expected} {deadline}\n".encode())
        process.stdin.flush()
    reports = []
    for process in processes:
        assert process.stdout is not None
        reports.append(json.loads(process.stdout.readline()))
    return reports


def measure(server: str, pid: int, urls: list[str], ctx: RunContext[FanoutConfig]) -> Phase:
    """Connect the clients to a running server (process ``pid``), publish, collect, summarize."""
    config = ctx.config
    idle_rss = rss_reading({"server": pid})["server"]
    with client_processes(urls, config, ctx.work_dir, server) as processes:
        connected_rss = rss_reading({"server": pid})["server"]
        cpu = Delta(cpu_reading({"server": pid}))
        bus = RabbitEventBus(config.amqp_url, ctx.settings.events_exchange)
        try:
            with PeakRss({"server": pid}) as peak:
                per_user, start, end = publish(bus, config)
                results = collect(processes, per_user, config, end + config.drain_s)
        finally:
            bus.close()
        server_cpu = cpu.since()
    latencies = [latency for result in results for latency in result["latencies_ms"]]
    received = len(latencies)
    last_at = max((result["last_at"] for result in results), default=end)
    expected = sum(per_user[user_of(index, config)] for index in range(config.clients))
    return Phase(
        server=server,
        clients=sum(result["sockets"] for result in results),
        published=sum(per_user.values()),
        publish_s=round(end - start, 3),
        expected=expected,
        received=received,
        deliveries_per_s=round(received / max(last_at - start, 1e-9), 1),
        latency_ms=percentiles(latencies),
        server_rss_mib={"idle": idle_rss, "connected": connected_rss, "peak": peak.peak["server"]},
        cpu_s={
            "server": server_cpu["server"],
            "clients": round(sum(result["cpu_s"] for result in results), 3),
            "bench": server_cpu["bench"],
        },
        closed_early=sum(result["closed_early_count"] for result in results),
    )


def measure_engineroom(ctx: RunContext[FanoutConfig]) -> Phase:
    port = free_port(HOST)
    argv, log = [*ENGINEROOM, "api", "--host", HOST, "--port", str(port)], ctx.log("api")
    users = {user_of(index, ctx.config) for index in range(ctx.config.clients)}
    tokens = {user: issue_token(ctx.settings, user_id=user, tenant_id=TENANT) for user in users}
    urls = [f"ws://{HOST}:{port}/ws?token={tokens[user_of(index, ctx.config)]}" for index in range(ctx.config.clients)]
    with running(argv, log, ctx.engineroom_env("bench_ws")) as api:
        wait_until(lambda: http_ok(f"http://{HOST}:{port}/readyz"), "engineroom api", api, log)
        return measure("engineroom", api.pid, urls, ctx)


def measure_baseline(ctx: RunContext[FanoutConfig]) -> Phase:
    port = free_port(HOST)
    argv = [sys.executable, "-m", "bench.ws_baseline", "--port", str(port), "--amqp-url", ctx.config.amqp_url]
    argv += ["--exchange", ctx.settings.events_exchange]
    urls = [f"ws://{HOST}:{port}/ws?user={user_of(index, ctx.config)}" for index in range(ctx.config.clients)]
    with running(argv, ctx.log("baseline"), {}) as server:
        wait_until(lambda: port_open(port), "baseline server", server, ctx.log("baseline"))
        return measure("baseline", server.pid, urls, ctx)


def run(config: FanoutConfig) -> dict[str, Any]:
    work_dir = Path(tempfile.mkdtemp(prefix="engineroom-bench-ws-"))
    print(f"logs: {work_dir}")
    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        mongodb_url, database_pid = stack.enter_context(database(work_dir))
        ctx = RunContext(config, secrets.token_hex(4), work_dir, mongodb_url, database_pid, secrets.token_urlsafe(32))
        stack.callback(delete_topology, ctx.settings)
        phases = [measure_engineroom(ctx), measure_baseline(ctx)]
    return {
        "at": datetime.now(UTC).isoformat(),
        "config": asdict(config),
        "phases": [asdict(phase) for phase in phases],
        "cpus": os.cpu_count(),
        "loadavg_1_5_15": {"before": load_before, "after": os.getloadavg()},
        "log_dir": str(work_dir),
        "logs": log_findings(work_dir),
    }


def render(phases: list[dict[str, Any]]) -> str:
    rows = [
        ("clients (sockets)", lambda p: p["clients"]),
        ("events published", lambda p: p["published"]),
        ("events/s published", lambda p: round(p["published"] / p["publish_s"], 1)),
        ("deliveries expected", lambda p: p["expected"]),
        ("deliveries received", lambda p: p["received"]),
        ("deliveries/s", lambda p: p["deliveries_per_s"]),
        ("latency p50 ms", lambda p: p["latency_ms"].get("p50")),
        ("latency p95 ms", lambda p: p["latency_ms"].get("p95")),
        ("latency p99 ms", lambda p: p["latency_ms"].get("p99")),
        ("latency max ms", lambda p: p["latency_ms"].get("max")),
        ("server RSS MiB before clients", lambda p: p["server_rss_mib"]["idle"]),
        ("server RSS MiB, clients connected", lambda p: p["server_rss_mib"]["connected"]),
        ("server RSS MiB peak", lambda p: p["server_rss_mib"]["peak"]),
        ("server CPU s", lambda p: p["cpu_s"]["server"]),
        ("client processes CPU s", lambda p: p["cpu_s"]["clients"]),
        ("sockets closed early", lambda p: p["closed_early"]),
    ]
    lines = [f"{'figure':<36}" + "".join(f"{phase['server']:>14}" for phase in phases)]
    lines += [f"{name:<36}" + "".join(f"{value(phase)!s:>14}" for phase in phases) for name, value in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> tuple[FanoutConfig, Path]:
    parser = argparse.ArgumentParser(prog="python -m bench ws", description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--clients", type=int, default=1000, help="WebSockets in all")
    parser.add_argument("--users", type=int, default=100, help="users the sockets are spread over")
    parser.add_argument("--rate", type=float, default=300.0, help="events published per second")
    parser.add_argument("--duration-s", type=float, default=15.0, help="seconds of publishing per server")
    parser.add_argument("--drain-s", type=float, default=10.0, help="seconds after the last publish to collect")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--no-compression", action="store_true", help="do not offer permessage-deflate")
    parser.add_argument("--amqp-url", default=os.environ.get("ENGINEROOM_AMQP_URL", Settings().amqp_url))
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    config = FanoutConfig(
        clients=args.clients,
        users=args.users,
        rate=args.rate,
        duration_s=args.duration_s,
        drain_s=args.drain_s,
        client_processes=args.client_processes,
        compression=not args.no_compression,
        amqp_url=args.amqp_url,
    )
    return config, args.output


def main(argv: list[str] | None = None) -> int:
    config, output = parse_args(argv)
    per_user = config.clients // config.users
    print(
        f"ws fan-out: {config.clients} sockets ({config.users} users x {per_user}) in {config.client_processes} "
        f"client processes; {config.rate:g} events/s for {config.duration_s:g} s per server"
    )
    result = run(config)
    write_result(output, result)
    print(render(result["phases"]))
    print(f"cpus: {result['cpus']}  load average before/after: {result['loadavg_1_5_15']}")
    print_log_findings(result)
    return 0
