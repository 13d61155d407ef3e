"""What the benchmarks share: processes in their own groups, SecantusDB, RabbitMQ topology, ``/proc`` readings, log
scanning and the report table.

Every process started here leads its own process group (``start_new_session``), which its forks (Dramatiq's worker
processes) join: CPU time and memory are read per group, so a figure covers the whole command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import httpx
import pika
import pika.exceptions
import pymongo
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from pika.adapters.blocking_connection import BlockingChannel

from engineroom.core.config import ENGINES, Settings
from engineroom.core.embedded import free_port
from engineroom.messaging.broker import MAX_PRIORITY
from engineroom.services.tokens import issue_token

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
HOST = "127.0.0.1"
#: The ``engineroom`` command, run from this interpreter.
ENGINEROOM = [sys.executable, "-m", "engineroom.cli"]
#: Seconds a process gets to become ready, and to stop after SIGTERM before its process group is killed.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
LOG_MARKERS = ("Traceback", "ERROR", "CRITICAL", "WARNING")
MIB = 1024 * 1024


# --- processes ---------------------------------------------------------------------------------------------


def process_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without inherited ``ENGINEROOM_*`` settings, plus ``extra``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("ENGINEROOM_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def engineroom_env(settings: Settings, mongodb_url: str, mongodb_db: str, jwt_secret: str) -> dict[str, str]:
    """The environment of an engineroom process: the database, the namespace, the secret and RabbitMQ."""
    return {
        "ENGINEROOM_MONGODB_URL": mongodb_url,
        "ENGINEROOM_MONGODB_DB": mongodb_db,
        "ENGINEROOM_NAMESPACE": settings.namespace,
        "ENGINEROOM_JWT_SECRET": jwt_secret,
        "ENGINEROOM_AMQP_URL": settings.amqp_url,
    }


def stop(process: subprocess.Popen[bytes], *, kill: bool = False) -> None:
    """SIGTERM the process (Dramatiq and uvicorn shut down cleanly on it); SIGKILL its group if it hangs, or at
    once with ``kill``."""
    if process.poll() is None and not kill:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=0 if kill else STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # its own session: the group is it and its forked workers
        process.wait()


@contextlib.contextmanager
def running(
    argv: list[str], log: Path, env: dict[str, str], *, kill: bool = False
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` with stdout and stderr in ``log``; stop it on leaving (``stop``), whatever happened."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            argv, stdout=output, stderr=subprocess.STDOUT, env=process_env(env), cwd=REPO_ROOT, start_new_session=True
        )
    try:
        yield process
    finally:
        stop(process, kill=kill)


def wait_until(ready: Callable[[], bool], what: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``ready`` until it holds.

    Raises:
      RuntimeError: ``process`` exited, or ``ready`` did not hold within ``START_TIMEOUT_S``.
    """
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {process.returncode}; see {log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {START_TIMEOUT_S} s; see {log}")
        time.sleep(0.1)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def scan_log(log: Path) -> dict[str, int]:
    """How many lines of ``log`` carry each of ``LOG_MARKERS``."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return {marker: sum(marker in line for line in lines) for marker in LOG_MARKERS}


def log_findings(work_dir: Path) -> dict[str, dict[str, int]]:
    """``scan_log`` of every log in ``work_dir``."""
    return {log.name: scan_log(log) for log in sorted(work_dir.glob("*.log"))}


@contextlib.contextmanager
def database(work_dir: Path) -> Iterator[tuple[str, int]]:
    """A ``secantusd-py`` process on a free port with its data in ``work_dir``; yields its URL and pid."""
    port, storage, log = free_port(HOST), work_dir / "secantus-data", work_dir / "secantusd.log"
    argv = ["secantusd-py", "--host", HOST, "--port", str(port), "--storage-path", str(storage)]
    try:
        # Killed at the end: its data is deleted with it, so there is nothing for a clean stop to keep.
        with running(argv, log, {}, kill=True) as process:
            wait_until(lambda: port_open(port), "secantusd-py", process, log)
            # retryWrites=false: SecantusDB slows down badly with retryable writes (DESIGN.md pitfalls).
            yield f"mongodb://{HOST}:{port}/?retryWrites=false&directConnection=true", process.pid
    finally:
        shutil.rmtree(storage, ignore_errors=True)


def mongo_client(mongodb_url: str) -> pymongo.MongoClient[dict[str, Any]]:
    return pymongo.MongoClient(mongodb_url, serverSelectionTimeoutMS=5000)


def db_reading(mongodb_url: str) -> Callable[[], dict[str, float]]:
    """The database's ``serverStatus`` counters (the database serves this run only). SecantusDB counts one per
    command, not per document: ``insert_many`` of 1,000 is one ``insert``, a ``bulk_write`` one ``update``.
    ``requests`` (``network.numRequests``) is every round trip, driver heartbeats and this reading included."""

    def read() -> dict[str, float]:
        with mongo_client(mongodb_url) as client:
            status = client.admin.command("serverStatus")
            return {**status["opcounters"], "requests": status["network"]["numRequests"]}

    return read


# --- /proc readings ----------------------------------------------------------------------------------------

Reading = Callable[[], dict[str, float]]


class Delta:
    """How much each figure of a reading grew between creation and ``since()``."""

    def __init__(self, read: Reading) -> None:
        self._read = read
        self._start = read()

    def since(self, per: int = 1) -> dict[str, float]:
        now = self._read()
        return {name: round((now[name] - self._start.get(name, 0.0)) / per, 3) for name in now}


def _group_stats(pgid: int) -> Iterator[tuple[str, list[str]]]:
    """``(pid, fields of /proc/<pid>/stat after "(comm)")`` of each live process in group ``pgid``."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rpartition(")")[2].split()  # state, ppid, pgrp, ...
            if int(fields[2]) == pgid:
                yield stat.parent.name, fields


def group_cpu_s(pgid: int) -> float:
    """User plus system CPU seconds of the live processes in group ``pgid``."""
    ticks = sum(int(fields[11]) + int(fields[12]) for _, fields in _group_stats(pgid))  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _proc_kib(path: str, key: str) -> int:
    """The ``key:`` line of a ``/proc`` file such as ``status`` in KiB; 0 when absent (a zombie) or gone."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def group_rss_mib(pgid: int) -> float:
    """``VmRSS`` summed over the live processes of group ``pgid``, in MiB. A forked child's pages that it still
    shares copy-on-write with its parent count in both, so this is an upper bound of what the group occupies."""
    return sum(_proc_kib(f"/proc/{pid}/status", "VmRSS:") for pid, _ in _group_stats(pgid)) / 1024


def group_pss_mib(pgid: int) -> float:
    """Proportional set size summed over group ``pgid``, in MiB: each shared page split among its sharers, so
    pages a fork shares with its parent (or with any other process) count once in total."""
    return sum(_proc_kib(f"/proc/{pid}/smaps_rollup", "Pss:") for pid, _ in _group_stats(pgid)) / 1024


def group_processes(pgid: int) -> list[dict[str, Any]]:
    """Each live process of group ``pgid``: pid, RSS and PSS in MiB, command line (cut to 120 characters)."""
    found = []
    for pid, _ in _group_stats(pgid):
        with contextlib.suppress(OSError):
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            rss = _proc_kib(f"/proc/{pid}/status", "VmRSS:") / 1024
            pss = _proc_kib(f"/proc/{pid}/smaps_rollup", "Pss:") / 1024
            found.append({"pid": int(pid), "rss_mib": round(rss, 1), "pss_mib": round(pss, 1), "cmd": command[:120]})
    return found


def cpu_reading(groups: dict[str, int]) -> Reading:
    """CPU seconds used by each named process group and by this process (``bench``): Linux ``/proc``."""
    return lambda: {**{name: group_cpu_s(pgid) for name, pgid in groups.items()}, "bench": time.process_time()}


def rss_reading(groups: dict[str, int]) -> dict[str, float]:
    """MiB resident (``VmRSS``) per named process group, now."""
    return {name: round(group_rss_mib(pgid), 1) for name, pgid in groups.items()}


def pss_reading(groups: dict[str, int]) -> dict[str, float]:
    """MiB proportional set size per named process group, now."""
    return {name: round(group_pss_mib(pgid), 1) for name, pgid in groups.items()}


class PeakRss:
    """Samples ``rss_reading`` every ``interval_s`` in a thread while in its ``with`` block; ``peak`` is the highest
    reading per group."""

    def __init__(self, groups: dict[str, int], interval_s: float = 0.25) -> None:
        self.groups, self.interval_s = groups, interval_s
        self.peak: dict[str, float] = dict.fromkeys(groups, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-rss", daemon=True)

    def _sample(self) -> None:
        while True:
            for name, mib in rss_reading(self.groups).items():
                self.peak[name] = max(self.peak[name], mib)
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- RabbitMQ ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def amqp_channel(amqp_url: str) -> Iterator[BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        yield connection.channel()
    finally:
        connection.close()


def queue_counts(amqp_url: str, queue: str) -> tuple[int, int] | None:
    """``(ready messages, consumers)`` of ``queue`` by a passive declare; None while it does not exist. Messages
    delivered to a consumer and not yet acknowledged are not counted: see ``unacked_counts``."""
    try:
        with amqp_channel(amqp_url) as channel:
            method = channel.queue_declare(queue, passive=True).method
            return method.message_count, method.consumer_count
    except pika.exceptions.ChannelClosedByBroker:
        return None


def consumer_count(amqp_url: str, queue: str) -> int:
    """Consumers on ``queue``; 0 while it does not exist yet."""
    counts = queue_counts(amqp_url, queue)
    return 0 if counts is None else counts[1]


def forget_deliveries(amqp_url: str, queue: str) -> None:
    """Once a killed worker's consumers are gone from ``queue``, purge it: the messages it had not acknowledged
    (a last ack lost with the process) are back in the line, and the next repeat's worker would take them (seen: a
    job of the first repeat "not found" by the second's worker; a raw message counted twice)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while consumer_count(amqp_url, queue) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(pika.exceptions.ChannelClosedByBroker), amqp_channel(amqp_url) as channel:
        channel.queue_purge(queue)


def consumers_at_least(amqp_url: str, queue: str, count: int) -> Callable[[], bool]:
    """A readiness check: ``count`` consumers (one per worker process) are on ``queue``."""
    return lambda: consumer_count(amqp_url, queue) >= count


def unacked_counts(amqp_url: str, queues: list[str]) -> dict[str, int] | None:
    """Messages delivered and not yet acknowledged (held by consumers) per queue, from ``rabbitmqctl`` (AMQP cannot
    tell); None when ``rabbitmqctl`` is not there or fails. Absent queues are left out."""
    vhost = pika.URLParameters(amqp_url).virtual_host
    argv = ["rabbitmqctl", "list_queues", "-q", "--no-table-headers", "-p", vhost, "name", "messages_unacknowledged"]
    try:
        listing = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    wanted = set(queues)
    rows = (line.split("\t") for line in listing.splitlines())
    return {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[0] in wanted}


def dramatiq_queues(queue: str) -> list[str]:
    """A queue and the delay and dead-letter companions Dramatiq declares with it."""
    return [queue, f"{queue}.DQ", f"{queue}.XQ"]


def delete_topology(settings: Settings, extra_queues: Sequence[str] = ()) -> None:
    """Delete every engine queue and the notification deliveries' queue (with their companions), the notifiers'
    queue and the events exchange of ``settings.namespace``, and ``extra_queues`` with theirs (deleting an absent
    one is not an error)."""
    engine_queues = [settings.queue_name(engine) for engine in ENGINES] + [settings.notifications_queue]
    queues = [name for queue in engine_queues for name in dramatiq_queues(queue)]
    queues += [name for queue in extra_queues for name in dramatiq_queues(queue)]
    with amqp_channel(settings.amqp_url) as channel:
        for queue in [*queues, settings.notifier_queue]:
            channel.queue_delete(queue)
        channel.exchange_delete(settings.events_exchange)


@contextlib.contextmanager
def raw_broker(amqp_url: str) -> Iterator[RabbitmqBroker]:
    """A Dramatiq broker with engineroom's queue arguments (``x-max-priority``), so only the work per message differs;
    closed on leaving, which also flushes what pika still buffers."""
    broker = RabbitmqBroker(url=amqp_url, max_priority=MAX_PRIORITY)
    try:
        yield broker
    finally:
        broker.close()


def noop_message(queue: str, *args: Any) -> Message[Any]:
    """A message for ``bench.raw_worker``'s actor on ``queue`` (its actor is named after its queue)."""
    return Message(queue_name=queue, actor_name=queue, args=args, kwargs={}, options={})


def enqueue_noops(amqp_url: str, queue: str, count: int) -> None:
    """``count`` no-op messages, one after another as any Dramatiq producer sends them; returns once the broker is
    closed, so what pika still buffered has been written too."""
    with raw_broker(amqp_url) as broker:
        for _ in range(count):
            broker.enqueue(noop_message(queue))


class _WorkerConfig(Protocol):
    @property
    def amqp_url(self) -> str: ...
    @property
    def processes(self) -> int: ...
    @property
    def threads(self) -> int: ...


@contextlib.contextmanager
def dramatiq_worker(
    ctx: RunContext[Any], module: str, queue: str, log_name: str, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """A plain ``dramatiq <module>`` worker (``ctx.config``'s processes and threads) on ``queue``, with ``env``;
    yields it once every process consumes ``queue``, kills it on leaving and forgets what it had not acknowledged
    (``forget_deliveries``): a baseline has done its work by then, and Dramatiq's own stop takes 3 s (a second's
    poll each in its worker process, its consumers and its parent), per side and repeat."""
    config: _WorkerConfig = ctx.config
    log = ctx.log(log_name)
    argv = [sys.executable, "-m", "dramatiq", module, "--path", str(REPO_ROOT)]
    argv += ["--processes", str(config.processes), "--threads", str(config.threads), "--queues", queue]
    try:
        with running(argv, log, {"BENCH_AMQP_URL": config.amqp_url, **env}, kill=True) as worker:
            wait_until(consumers_at_least(config.amqp_url, queue, config.processes), module, worker, log)
            yield worker
    finally:
        forget_deliveries(config.amqp_url, queue)


@contextlib.contextmanager
def raw_worker(ctx: RunContext[Any], repeat: int, counter: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A plain ``dramatiq`` worker on ``bench.raw_worker`` (``ctx.config``'s processes and threads) appending to
    ``counter``; yields it once every process consumes ``ctx.raw_queue``, stops it on leaving."""
    env = {"BENCH_RAW_QUEUE": ctx.raw_queue, "BENCH_RAW_COUNTER": str(counter)}
    with dramatiq_worker(ctx, "bench.raw_worker", ctx.raw_queue, f"raw-worker-{repeat}", env) as worker:
        yield worker


def finish_times(counter: Path) -> list[float]:
    """The first field of each line a baseline's actor appended to ``counter``: when each message finished."""
    return [float(line.split()[0]) for line in counter.read_text().splitlines()]


# --- options -------------------------------------------------------------------------------------------------


def parser_for(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of ``python -m bench <name>``, described by the first paragraph of the module's docstring."""
    return argparse.ArgumentParser(prog=f"python -m bench {name}", description=doc.split("\n\n")[0] if doc else "")


def add_run_options(parser: argparse.ArgumentParser, *, repeat: int, output: Path, workers: bool = True) -> None:
    """The options every interleaved benchmark has: repeats, worker shape (engineroom and raw alike), RabbitMQ,
    and where the JSON goes."""
    parser.add_argument("--repeat", type=int, default=repeat, help="interleaved engineroom/baseline pairs")
    if workers:
        parser.add_argument("--processes", type=int, default=1, help="worker processes, engineroom and raw alike")
        parser.add_argument("--threads", type=int, default=8, help="threads per worker process")
    parser.add_argument("--amqp-url", default=os.environ.get("ENGINEROOM_AMQP_URL", Settings().amqp_url))
    parser.add_argument("--output", type=Path, default=output)


T = TypeVar("T")


def config_from_args(cls: type[T], args: argparse.Namespace, **values: Any) -> T:
    """``cls`` (a dataclass) from the parsed options named like its fields, ``values`` overriding: each option is
    declared once, on the parser, and the mapping to the config stays in one place."""
    found = {item.name: getattr(args, item.name) for item in fields(cls) if hasattr(args, item.name)}  # type: ignore[arg-type]
    return cls(**{**found, **values})


# --- the report ----------------------------------------------------------------------------------------------

Figure = tuple[str, list[float]]


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def table(rows: list[Figure]) -> str:
    """One line per figure: its median, min and max over the repeats (columns widen to fit the numbers)."""
    keys = ("median", "min", "max")
    cells = [(name, [f"{value:.3f}" for value in spread(values).values()]) for name, values in rows]
    width = max([36, *(len(name) + 2 for name, _ in rows)])
    column = max([10, *(len(cell) + 2 for _, row in cells for cell in row)])
    lines = [f"{'figure':<{width}}" + "".join(f"{key:>{column}}" for key in keys)]
    lines += [f"{name:<{width}}" + "".join(f"{cell:>{column}}" for cell in row) for name, row in cells]
    return "\n".join(lines)


@dataclass(frozen=True)
class Comparison:
    """One line of the suite's table: an engineroom figure, its baseline measured in the same run, its target."""

    figure: str
    #: ``spread`` over the repeats (median, min, max).
    engineroom: dict[str, float]
    baseline: dict[str, float] | None
    #: What the baseline is, for the JSON (the table has no room for it).
    baseline_is: str
    target: str
    #: None: the figure has no target, or was not measured.
    met: bool | None
    #: engineroom/baseline; None: the medians' ratio. Set when each repeat's pair gives a ratio of its own.
    ratio: float | None = None

    @property
    def ratio_or_medians(self) -> float | None:
        if self.ratio is not None:
            return self.ratio
        if self.baseline is None or not self.baseline["median"]:
            return None
        return self.engineroom["median"] / self.baseline["median"]


def _cell(values: dict[str, float] | None) -> tuple[str, str]:
    if values is None:
        return "-", "-"
    return f"{values['median']:.4g}", f"{values['min']:.4g}..{values['max']:.4g}"


def comparison_table(rows: Sequence[Comparison]) -> str:
    """Figure, engineroom median and min..max, baseline median and min..max, ratio, target and whether it is met."""
    header = ("figure", "engineroom", "spread", "baseline", "spread", "ratio", "target", "met?")
    cells = []
    for row in rows:
        ratio = row.ratio_or_medians
        verdict = "-" if row.met is None else "met" if row.met else "NOT MET"
        cells.append(
            (row.figure, *_cell(row.engineroom), *_cell(row.baseline), "-" if ratio is None else f"{ratio:.3g}")
            + (row.target, verdict)
        )
    widths = [max(len(line[column]) for line in [header, *cells]) for column in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if column in (0, 6) else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in [header, *cells]
    )


def target_lines(rows: Sequence[Comparison]) -> list[str]:
    """One line per target: the engineroom median, the target, and whether it is met."""
    verdicts = ["-" if row.met is None else "met" if row.met else "NOT MET" for row in rows]
    return [
        f"target {row.figure}: {row.engineroom['median']:.4g} vs {row.target} -> {verdict}"
        for row, verdict in zip(rows, verdicts, strict=True)
    ]


def run_report(
    config: Any, work_dir: Path, engineroom: Sequence[Any], raw: Sequence[Any], rows: list[Figure]
) -> dict[str, Any]:
    """What every interleaved benchmark reports: its config, each sample (dataclasses), each figure's spread, the
    table, and the warnings and errors in its logs."""
    return {
        "at": datetime.now(UTC).isoformat(),
        "config": asdict(config),
        "engineroom": [asdict(sample) for sample in engineroom],
        "raw": [asdict(sample) for sample in raw],
        "summary": {name: spread(values) for name, values in rows},
        "table": table(rows),
        "log_dir": str(work_dir),
        "logs": log_findings(work_dir),
    }


def publish(output: Path, result: dict[str, Any], lines: Sequence[str] = ()) -> None:
    """Write the JSON; print the table, ``lines`` (targets, checks), how busy the machine was and the log findings."""
    write_result(output, result)
    print(result["table"])
    for line in lines:
        print(line)
    print(f"cpus: {result['cpus']}  load average before/after: {result['loadavg_1_5_15']}")
    print_log_findings(result)
    print(f"written: {output}")


def chunks(total: int, size: int) -> Iterator[int]:
    """``total`` split into sizes of at most ``size``: the batches of a batch submit."""
    full, rest = divmod(total, size)
    yield from [size] * full
    if rest:
        yield rest


def write_result(output: Path, result: dict[str, Any]) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")


def print_log_findings(result: dict[str, Any]) -> None:
    print(f"log findings ({result['log_dir']}):")
    for name, counts in result["logs"].items():
        print(f"  {name:<20} " + "  ".join(f"{marker}={count}" for marker, count in counts.items()))


class _HasAmqpUrl(Protocol):
    @property
    def amqp_url(self) -> str: ...


C = TypeVar("C", bound=_HasAmqpUrl)


@dataclass(frozen=True)
class RunContext(Generic[C]):
    """What one run shares across its repeats: names, secrets, the database and where logs go."""

    config: C
    tag: str
    work_dir: Path
    mongodb_url: str
    database_pid: int
    jwt_secret: str = field(repr=False)
    #: Ends the raw Dramatiq queue's name, so each benchmark's queue is told apart.
    raw_suffix: str = "raw"

    @property
    def settings(self) -> Settings:
        """The settings the engineroom processes run with (database aside); names queues and signs tokens."""
        return Settings(namespace=f"bench{self.tag}.", jwt_secret=self.jwt_secret, amqp_url=self.config.amqp_url)

    @property
    def raw_queue(self) -> str:
        return f"bench{self.tag}-{self.raw_suffix}"

    @property
    def floor_queue(self) -> str:
        """The floor baseline's queue (``bench/floor_worker.py``)."""
        return f"bench{self.tag}-floor"

    def log(self, name: str) -> Path:
        return self.work_dir / f"{name}.log"

    def engineroom_env(self, mongodb_db: str) -> dict[str, str]:
        """The environment of one repeat's engineroom processes. The worker's metrics server gets a free port: its
        default (9191) is taken by any other engineroom worker on the machine, and the bind error kills the
        worker's metrics process (a traceback in its log) though the figures are still taken."""
        metrics = {"ENGINEROOM_WORKER_METRICS_PORT": str(free_port(HOST))}
        return {**engineroom_env(self.settings, self.mongodb_url, mongodb_db, self.jwt_secret), **metrics}


@contextlib.contextmanager
def run_context(config: C, prefix: str, raw_suffix: str = "raw") -> Iterator[RunContext[C]]:
    """A run's shared state: a temporary log directory (printed), a SecantusDB process, a fresh namespace; on
    leaving, on error too, the namespace's queues (and the raw and floor queues) and events exchange are deleted."""
    work_dir = Path(tempfile.mkdtemp(prefix=f"engineroom-bench-{prefix}-"))
    print(f"logs: {work_dir}")
    with contextlib.ExitStack() as stack:
        mongodb_url, database_pid = stack.enter_context(database(work_dir))
        tag, secret = secrets.token_hex(4), secrets.token_urlsafe(32)
        ctx = RunContext(config, tag, work_dir, mongodb_url, database_pid, secret, raw_suffix)
        stack.callback(delete_topology, ctx.settings, [ctx.raw_queue, ctx.floor_queue])
        print(f"namespace: {ctx.settings.namespace}  raw queue: {ctx.raw_queue}")
        yield ctx


def machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    """How busy the machine was: the figures of a noisy machine are read with this next to them."""
    return {"cpus": os.cpu_count(), "loadavg_1_5_15": {"before": load_before, "after": os.getloadavg()}}


@dataclass(frozen=True)
class Stack:
    """A running ``engineroom api``, ``engineroom worker`` and ``engineroom scheduler``, and an admin token."""

    api: subprocess.Popen[bytes]
    #: None when started without one (the batch benchmark measures acceptance alone).
    worker: subprocess.Popen[bytes] | None
    port: int
    token: str
    #: None unless asked for: it releases parked jobs within a tick, and runs the notifier.
    scheduler: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws?token={self.token}"

    def process_groups(self, database_pid: int) -> dict[str, int]:
        """The process group of each running part, named, and the database's: what ``cpu_reading`` reads."""
        parts = {"api": self.api, "worker": self.worker, "scheduler": self.scheduler}
        return {name: process.pid for name, process in parts.items() if process is not None} | {
            "secantusd": database_pid
        }


def _scheduler_leads(base_url: str, token: str) -> bool:
    """``GET /workers`` lists a scheduler that holds the leader lease."""
    try:
        listed = httpx.get(f"{base_url}/workers", headers=auth(token), timeout=2)
    except httpx.HTTPError:
        return False
    return listed.status_code == 200 and any(
        process["kind"] == "scheduler" and process.get("leader") for process in listed.json()
    )


def _start_worker(
    stack: contextlib.ExitStack, ctx: RunContext[Any], engine: str, log: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    config: _WorkerConfig = ctx.config
    argv = [*ENGINEROOM, "worker", "--engines", engine, "--processes", str(config.processes)]
    argv += ["--threads", str(config.threads)]
    queue = ctx.settings.queue_name(engine)
    stack.callback(forget_deliveries, config.amqp_url, queue)  # after the kill: the stack unwinds last in, first out
    worker = stack.enter_context(running(argv, log, env, kill=True))
    consuming = consumers_at_least(config.amqp_url, queue, config.processes)
    wait_until(consuming, "engineroom worker", worker, log)
    return worker


@contextlib.contextmanager
def engineroom_stack(
    ctx: RunContext[Any],
    repeat: int,
    engine: str,
    *,
    worker: bool = True,
    raise_limit: bool = True,
    scheduler: bool = False,
) -> Iterator[Stack]:
    """An API, (unless ``worker`` is false) a worker for ``engine`` and (if ``scheduler``) a scheduler on database
    ``bench_<repeat>``, ready: the API answers ``/readyz``, every worker process consumes, the scheduler leads.
    With ``raise_limit`` the engine's cluster-wide concurrency is raised to the worker's threads (``general``
    defaults to 2), so every worker thread may run a job, as raw Dramatiq's do; without it the engine keeps its
    default limit, as a user's does. Rate limits stay unset (``process_env`` drops inherited ``ENGINEROOM_*``):
    unset means no limit. Its processes are killed on leaving, each figure read by then: stopped one after another,
    they took 4-5 s (a worker command drains for 3 s), per repeat."""
    settings, port, env = ctx.settings, free_port(HOST), ctx.engineroom_env(f"bench_{repeat}")
    base_url = f"http://{HOST}:{port}"
    with contextlib.ExitStack() as stack:
        api_log = ctx.log(f"api-{repeat}")
        api_argv = [*ENGINEROOM, "api", "--host", HOST, "--port", str(port)]
        api = stack.enter_context(running(api_argv, api_log, env, kill=True))
        wait_until(lambda: http_ok(f"{base_url}/readyz"), "engineroom api", api, api_log)
        token = issue_token(settings, user_id="bench", tenant_id="bench", admin=True)
        scheduler_process = None
        if scheduler:
            log = ctx.log(f"scheduler-{repeat}")
            scheduler_process = stack.enter_context(running([*ENGINEROOM, "scheduler"], log, env, kill=True))
            wait_until(lambda: _scheduler_leads(base_url, token), "engineroom scheduler", scheduler_process, log)
        worker_process = _start_worker(stack, ctx, engine, ctx.log(f"worker-{repeat}"), env) if worker else None
        if worker and raise_limit:
            config: _WorkerConfig = ctx.config
            limits = {"max_concurrency": config.processes * config.threads}
            raised = httpx.put(f"{base_url}/queues/{engine}/limits", json=limits, headers=auth(token))
            raised.raise_for_status()
        yield Stack(api, worker_process, port, token, scheduler_process)


def percentile(ordered: Sequence[float], share: float) -> float:
    """The value at ``share`` (0..1) of already sorted values, nearest rank below: no interpolation."""
    return ordered[int(share * (len(ordered) - 1))]
