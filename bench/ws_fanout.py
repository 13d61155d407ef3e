"""WebSocket fan-out benchmark: 5,000 sockets on one gateway, 1,000 of them receiving events; delivery latency.

What "5,000 connected, 1,000 active" means here: ``--clients`` sockets (5,000) belong to ``--users`` users
(2,500: two sockets per user, say a dashboard tab and an ``engineroom watch``); socket i belongs to user
i // (clients / users). The first ``--active`` sockets (1,000, so 500 users) are active: every event is
addressed to one of their users, round robin, and reaches both of that user's sockets. The other 4,000 sockets
are connected, authenticated and subscribed to their user's default topics, and receive nothing: they cost the
gateway memory, a sender task each and uvicorn's keep-alive pings, which is what the target is about. The
default rate, 500 events/s, gives each active socket one event a second (a job's progress bar moving), 1,000
deliveries/s in all: a third of what one gateway delivered to 1,000 sockets with p99 8 ms on a quiet 2-core
machine, so the p99 <= 100 ms target measures the cost of the 5,000 sockets, not a CPU-bound server.

(a) engineroom: a real ``engineroom api`` process (against SecantusDB and RabbitMQ), with one token per user,
the sockets opened by ``--client-processes`` processes (``bench/_ws_clients.py``; socket i in process
i mod n, so each holds active and idle sockets) so the clients are not the bottleneck of one core. They open
in waves of ``--wave`` sockets per process (at most 50 handshakes in flight per process) and the time to open
all of them is reported: each handshake verifies a JWT. This process publishes ``--rate`` events/s for
``--duration-s`` straight to the events exchange with ``RabbitEventBus.publish``, as workers do (tenant
``bench``): so the figure is the gateway's fan-out (consume, validate, authorize, buffer, serialize, send),
not job execution. SecantusDB is needed for the gateway to start, but takes no part in delivery: tokens are
checked without it, default topics need no lookup, and events published straight to the exchange are not
recorded; its CPU during the run is reported to show it.

(b) baseline: ``bench/ws_baseline.py``, a bare Starlette app under the same uvicorn, consuming the same exchange
the same way and sending each body to its user's sockets; no token, no validation, no per-socket buffer. Same
clients, same rate, same events.

Limits: a socket is a file on both ends, so the client processes raise their soft ``RLIMIT_NOFILE`` to the hard
limit, and the servers are started under ``ulimit -n <hard>``. Nothing in the gateway's settings caps sockets
(``core/config.py``: ``ENGINEROOM_WS_SEND_BUFFER`` is frames buffered per socket, 1,000, far above the one
event a second a socket gets here, so the bench passes no extra settings); uvicorn runs with its defaults (no
``limit_concurrency``, listen backlog 2,048, above the handshakes in flight).

Latency is receipt time minus the event's ``ts`` (stamped just before it is published; one clock). Deliveries/s
is deliveries received over the time from the first publish to the last receipt. Server RSS is read from
``/proc``: before clients, with every client connected, and the peak while events flow; server CPU while the
sockets open and while events flow. Clients offer permessage-deflate, as browsers do. Repeats interleave
(engineroom, baseline, engineroom, ...), each with fresh server processes; the summary gives each figure's
median, min and max over the repeats. Subprocess logs go to a temporary directory, whose path is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import selectors
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
    Figure,
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
    spread,
    table,
    wait_until,
    write_result,
)
from engineroom.core.config import Settings
from engineroom.core.embedded import free_port
from engineroom.messaging.bus import RabbitEventBus
from engineroom.models.event import EventType, new_event
from engineroom.services.tokens import issue_token

DEFAULT_OUTPUT = RESULTS_DIR / "ws_fanout.json"
TENANT = "bench"
#: Seconds the client processes get to open every socket.
CONNECT_TIMEOUT_S = 180.0
#: The servers' open-file limit raised to the hard one before they start (``ulimit -n`` in a shell that then
#: ``exec``s the server, so the process, its pid and its process group stay the server's).
RAISE_NOFILE = ["sh", "-c", 'ulimit -n "$(ulimit -Hn)" && exec "$@"', "sh"]


@dataclass(frozen=True)
class FanoutConfig:
    clients: int
    active: int
    users: int
    rate: float
    duration_s: float
    drain_s: float
    client_processes: int
    wave: int
    compression: bool
    repeat: int
    amqp_url: str

    @property
    def sockets_per_user(self) -> int:
        return self.clients // self.users

    @property
    def active_users(self) -> int:
        return self.active // self.sockets_per_user


@dataclass(frozen=True)
class Phase:
    server: str
    repeat: int
    clients: int
    failed_to_open: int
    open_s: float
    handshake_ms: dict[str, float]
    published: int
    publish_s: float
    expected: int
    received: int
    deliveries_per_s: float
    latency_ms: dict[str, float]
    server_rss_mib: dict[str, float]
    cpu_s: dict[str, float]
    closed_early: int
    open_errors: list[str]


def user_of(socket_index: int, config: FanoutConfig) -> str:
    return f"user{socket_index // config.sockets_per_user}"


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
) -> Iterator[tuple[list[subprocess.Popen[bytes]], list[dict[str, Any]]]]:
    """Start the client processes (socket i in process i mod n), wait until each has opened its sockets; yields
    the processes and their opening reports."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for number in range(config.client_processes):
            plan = work_dir / f"{tag}-clients-{number}.json"
            indexes = range(number, config.clients, config.client_processes)
            sockets = [{"url": urls[index], "user": user_of(index, config)} for index in indexes]
            plan.write_text(json.dumps({"sockets": sockets, "wave": config.wave, "compression": config.compression}))
            argv = [sys.executable, "-m", "bench._ws_clients", str(plan)]
            with (work_dir / f"{tag}-clients-{number}.log").open("ab") as log:
                processes.append(
                    subprocess.Popen(
                        argv,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=log,
                        cwd=REPO_ROOT,
                        env=process_env({}),
                    )
                )
        openings = [_read_report(process, work_dir, time.monotonic() + CONNECT_TIMEOUT_S) for process in processes]
        yield processes, openings
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()


def _read_report(process: subprocess.Popen[bytes], work_dir: Path, deadline: float) -> dict[str, Any]:
    """The next JSON line a client process prints.

    Raises:
      RuntimeError: it printed something else, exited, or said nothing before ``deadline`` (then it is killed).
    """
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(max(0.0, deadline - time.monotonic())):
            process.kill()
            raise RuntimeError(f"a client process said nothing in time; see {work_dir}")
    line = process.stdout.readline()
    try:
        report: dict[str, Any] = json.loads(line)
    except ValueError:
        raise RuntimeError(f"a client process answered {line[:200]!r}; see {work_dir}") from None
    return report


def publish(bus: RabbitEventBus, config: FanoutConfig) -> tuple[Counter[str], float, float]:
    """``rate`` events/s for ``duration_s``, round robin over the active users; returns events per user, start,
    end."""
    total = int(config.rate * config.duration_s)
    per_user: Counter[str] = Counter()
    start = time.time()
    for number in range(total):
        ahead_s = start + number / config.rate - time.time()
        if ahead_s > 0:
            time.sleep(ahead_s)
        user = f"user{number % config.active_users}"
        data = {"state": "running", "percent": number % 100, "message": "bench", "engine": "general"}
        event = new_event(EventType.JOB_PROGRESS, tenant_id=TENANT, user_id=user, job_id=f"job{number}", data=data)
        bus.publish(event)
        per_user[user] += 1
    return per_user, start, time.time()


def collect(
    processes: list[subprocess.Popen[bytes]], per_user: Counter[str], deadline: float, work_dir: Path
) -> list[dict[str, Any]]:
    """Tell each client process how many events each user got, then read its report."""
    order = json.dumps({"per_user": dict(per_user), "deadline": deadline}) + "\n"
    for process in processes:
        assert process.stdin is not None
        process.stdin.write(order.encode())
        process.stdin.flush()
    return [_read_report(process, work_dir, time.monotonic() + (deadline - time.time()) + 60) for process in processes]


def measure(server: str, repeat: int, pids: dict[str, int], urls: list[str], ctx: RunContext[FanoutConfig]) -> Phase:
    """Connect the clients to a running server (``pids["server"]``), publish, collect, summarize."""
    config, server_only = ctx.config, {"server": pids["server"]}
    idle_rss = rss_reading(server_only)["server"]
    opening_cpu = Delta(cpu_reading(server_only))
    with client_processes(urls, config, ctx.work_dir, f"{server}-{repeat}") as (processes, openings):
        open_cpu = opening_cpu.since()
        connected_rss = rss_reading(server_only)["server"]
        cpu = Delta(cpu_reading(pids))
        bus = RabbitEventBus(config.amqp_url, ctx.settings.events_exchange)
        try:
            with PeakRss(server_only) as peak:
                per_user, start, end = publish(bus, config)
                results = collect(processes, per_user, end + config.drain_s, ctx.work_dir)
        finally:
            bus.close()
        flow_cpu = cpu.since()
    latencies = [latency for result in results for latency in result["latencies_ms"]]
    received = len(latencies)
    last_at = max((result["last_at"] for result in results), default=end)
    return Phase(
        server=server,
        repeat=repeat,
        clients=sum(result["sockets"] for result in results),
        failed_to_open=sum(opening["failed"] for opening in openings),
        open_s=max(opening["open_s"] for opening in openings),
        handshake_ms=percentiles([ms for opening in openings for ms in opening["handshake_ms"]]),
        published=sum(per_user.values()),
        publish_s=round(end - start, 3),
        expected=sum(result["expected"] for result in results),
        received=received,
        deliveries_per_s=round(received / max(last_at - start, 1e-9), 1),
        latency_ms=percentiles(latencies),
        server_rss_mib={"idle": idle_rss, "connected": connected_rss, "peak": peak.peak["server"]},
        cpu_s={
            "server_opening": open_cpu["server"],
            **{name: value for name, value in flow_cpu.items() if name != "bench"},
            "clients": round(sum(result["cpu_s"] for result in results), 3),
            "bench": flow_cpu["bench"],
        },
        closed_early=sum(result["closed_early_count"] for result in results),
        open_errors=[error for opening in openings for error in opening["errors"]][:5],
    )


def measure_engineroom(ctx: RunContext[FanoutConfig], repeat: int) -> Phase:
    port = free_port(HOST)
    argv, log = [*RAISE_NOFILE, *ENGINEROOM, "api", "--host", HOST, "--port", str(port)], ctx.log(f"api-{repeat}")
    users = sorted({user_of(index, ctx.config) for index in range(ctx.config.clients)})
    tokens = {user: issue_token(ctx.settings, user_id=user, tenant_id=TENANT) for user in users}
    urls = [f"ws://{HOST}:{port}/ws?token={tokens[user_of(index, ctx.config)]}" for index in range(ctx.config.clients)]
    with running(argv, log, ctx.engineroom_env("bench_ws")) as api:
        wait_until(lambda: http_ok(f"http://{HOST}:{port}/readyz"), "engineroom api", api, log)
        return measure("engineroom", repeat, {"server": api.pid, "secantusd": ctx.database_pid}, urls, ctx)


def measure_baseline(ctx: RunContext[FanoutConfig], repeat: int) -> Phase:
    port, log = free_port(HOST), ctx.log(f"baseline-{repeat}")
    argv = [*RAISE_NOFILE, sys.executable, "-m", "bench.ws_baseline", "--port", str(port)]
    argv += ["--amqp-url", ctx.config.amqp_url, "--exchange", ctx.settings.events_exchange]
    urls = [f"ws://{HOST}:{port}/ws?user={user_of(index, ctx.config)}" for index in range(ctx.config.clients)]
    with running(argv, log, {}) as server:
        wait_until(lambda: port_open(port), "baseline server", server, log)
        return measure("baseline", repeat, {"server": server.pid}, urls, ctx)


def _progress(phase: Phase) -> str:
    latency = phase.latency_ms
    return (
        f"  #{phase.repeat} {phase.server:<10} {phase.clients} sockets open in {phase.open_s:.1f} s, "
        f"{phase.received}/{phase.expected} delivered, p50/p99 {latency.get('p50')}/{latency.get('p99')} ms"
    )


def run(config: FanoutConfig) -> dict[str, Any]:
    work_dir = Path(tempfile.mkdtemp(prefix="engineroom-bench-ws-"))
    print(f"logs: {work_dir}")
    load_before = os.getloadavg()
    phases: list[Phase] = []
    with contextlib.ExitStack() as stack:
        mongodb_url, database_pid = stack.enter_context(database(work_dir))
        ctx = RunContext(config, secrets.token_hex(4), work_dir, mongodb_url, database_pid, secrets.token_urlsafe(32))
        stack.callback(delete_topology, ctx.settings)
        for repeat in range(1, config.repeat + 1):
            for measure_one in (measure_engineroom, measure_baseline):
                phases.append(phase := measure_one(ctx, repeat))
                print(_progress(phase), flush=True)
    rows = figures(phases)
    return {
        "at": datetime.now(UTC).isoformat(),
        "config": asdict(config),
        "phases": [asdict(phase) for phase in phases],
        "summary": {name: spread(values) for name, values in rows},
        "table": table(rows),
        "cpus": os.cpu_count(),
        "loadavg_1_5_15": {"before": load_before, "after": os.getloadavg()},
        "log_dir": str(work_dir),
        "logs": log_findings(work_dir),
    }


#: Each figure of a phase: its row name and how to read it from the phase as stored (``asdict``).
ROWS: list[tuple[str, Any]] = [
    ("sockets connected", lambda p: p["clients"]),
    ("sockets failed to open", lambda p: p["failed_to_open"]),
    ("open s (all sockets)", lambda p: p["open_s"]),
    ("handshake p50 ms", lambda p: p["handshake_ms"].get("p50")),
    ("handshake p99 ms", lambda p: p["handshake_ms"].get("p99")),
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
    ("server CPU s opening sockets", lambda p: p["cpu_s"]["server_opening"]),
    ("server CPU s while events flow", lambda p: p["cpu_s"]["server"]),
    ("secantusd CPU s while events flow", lambda p: p["cpu_s"].get("secantusd")),
    ("client processes CPU s", lambda p: p["cpu_s"]["clients"]),
    ("sockets closed early", lambda p: p["closed_early"]),
]


def figures(phases: list[Phase]) -> list[Figure]:
    """Each numeric figure per server over the repeats, for the median/min/max summary."""
    stored = [asdict(phase) for phase in phases]
    rows: list[Figure] = []
    for server in dict.fromkeys(phase.server for phase in phases):
        mine = [phase for phase in stored if phase["server"] == server]
        for name, value in ROWS:
            values = [value(phase) for phase in mine]
            if all(isinstance(number, int | float) for number in values):
                rows.append((f"{server} {name}", [float(number) for number in values]))
    return rows


def render(phases: list[dict[str, Any]]) -> str:
    """Every run side by side, one column per server and repeat."""
    heads = [f"{phase['server'][:10]}#{phase['repeat']}" for phase in phases]
    lines = [f"{'figure':<36}" + "".join(f"{head:>14}" for head in heads)]
    lines += [f"{name:<36}" + "".join(f"{value(phase)!s:>14}" for phase in phases) for name, value in ROWS]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> tuple[FanoutConfig, Path]:
    parser = argparse.ArgumentParser(prog="python -m bench ws", description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--clients", type=int, default=5000, help="WebSockets connected in all")
    parser.add_argument("--active", type=int, default=1000, help="sockets whose users the events go to")
    parser.add_argument("--users", type=int, default=2500, help="users the sockets belong to (clients/users each)")
    parser.add_argument("--rate", type=float, default=500.0, help="events published per second")
    parser.add_argument("--duration-s", type=float, default=15.0, help="seconds of publishing per server")
    parser.add_argument("--drain-s", type=float, default=10.0, help="seconds after the last publish to collect")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--wave", type=int, default=500, help="sockets each client process opens per wave")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each server, interleaved")
    parser.add_argument("--no-compression", action="store_true", help="do not offer permessage-deflate")
    parser.add_argument("--amqp-url", default=os.environ.get("ENGINEROOM_AMQP_URL", Settings().amqp_url))
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.users < 1 or args.clients % args.users:
        parser.error("--clients must be a multiple of --users (every user has as many sockets)")
    if not 0 < args.active <= args.clients or args.active % (args.clients // args.users):
        parser.error("--active must be between 1 and --clients and a whole number of users' sockets")
    config = FanoutConfig(
        clients=args.clients,
        active=args.active,
        users=args.users,
        rate=args.rate,
        duration_s=args.duration_s,
        drain_s=args.drain_s,
        client_processes=args.client_processes,
        wave=args.wave,
        compression=not args.no_compression,
        repeat=args.repeat,
        amqp_url=args.amqp_url,
    )
    return config, args.output


def main(argv: list[str] | None = None) -> int:
    config, output = parse_args(argv)
    print(
        f"ws fan-out: {config.clients} sockets ({config.users} users x {config.sockets_per_user}), {config.active} "
        f"active ({config.active_users} users), in {config.client_processes} client processes; {config.rate:g} "
        f"events/s for {config.duration_s:g} s per server; {config.repeat} repeat(s)"
    )
    result = run(config)
    write_result(output, result)
    print(render(result["phases"]))
    if config.repeat > 1:
        print(result["table"])
    print(f"cpus: {result['cpus']}  load average before/after: {result['loadavg_1_5_15']}")
    print_log_findings(result)
    print(f"written: {output}")
    return 0
