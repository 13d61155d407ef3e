"""The ``engineroom`` command: one small function per subcommand, no logic of its own."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from engineroom.core.config import ENGINES, get_settings
from engineroom.core.logs import configure_logging

if TYPE_CHECKING:
    from engineroom.client.config import ClientConfig

logger = logging.getLogger("engineroom.cli")

#: Subcommands that talk to the API as a client and need none of the server's settings.
CLIENT_COMMANDS = frozenset({"submit", "watch"})
#: Default ``engineroom api --grace-s``: with the 5 s exit margin, within Kubernetes' default 30 s termination grace.
API_GRACE_S = 20.0
#: Default ``engineroom scheduler --grace-s``.
SCHEDULER_GRACE_S = 10.0


def _api(args: argparse.Namespace) -> int:
    from engineroom.api.server import serve_api

    return serve_api(args.host, args.port, args.grace_s)


def _worker(args: argparse.Namespace) -> int:
    if args.autoscale is not None:
        return _supervise(args)
    from engineroom.actors.worker_metrics import worker_metrics_environment
    from engineroom.autoscale.children import follow_supervisor
    from engineroom.core.shutdown import worker_grace_environment

    follow_supervisor()  # a child of ``--autoscale``: drain when the supervisor dies, even by SIGKILL
    with worker_metrics_environment(get_settings()):  # before dramatiq is imported: see its docstring
        with worker_grace_environment(args.grace_s):  # Dramatiq does not tell its worker processes
            return _run_dramatiq(args)


def _supervise(args: argparse.Namespace) -> int:
    import asyncio

    from engineroom.autoscale.children import WorkerCommand
    from engineroom.autoscale.supervisor import policy_from, supervise
    from engineroom.core.shutdown import ExitDeadline

    if args.processes is not None:
        raise SystemExit("--autoscale MIN:MAX decides the number of processes: drop --processes")
    settings = get_settings()
    configure_logging(settings.log_format)
    min_processes, max_processes = args.autoscale
    command = WorkerCommand(
        _engines(args.engines), args.threads, args.grace_s, args.notifications, settings.worker_metrics_port
    )
    deadline = ExitDeadline()
    policy = policy_from(settings, min_processes, max_processes)
    return deadline.finish(asyncio.run(supervise(settings, command, policy, deadline)))


def _process_range(value: str) -> tuple[int, int]:
    """``MIN:MAX`` with 1 <= MIN <= MAX."""
    try:
        low, high = (int(part) for part in value.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX, e.g. 1:4, not {value!r}") from None
    if not 1 <= low <= high:
        raise argparse.ArgumentTypeError(f"need 1 <= MIN <= MAX, not {value!r}")
    return low, high


def _run_dramatiq(args: argparse.Namespace) -> int:
    from dramatiq.cli import main as dramatiq_main
    from dramatiq.cli import make_argument_parser

    settings = get_settings()
    engines = _engines(args.engines)
    processes = 1 if args.processes is None else args.processes
    dramatiq_args = ["engineroom.actors.worker", "--processes", str(processes), "--threads", str(args.threads)]
    dramatiq_args += ["--worker-shutdown-timeout", str(int(args.grace_s * 1000))]
    queues = [settings.queue_name(engine) for engine in engines]
    if args.notifications:
        queues.append(settings.notifications_queue)
    dramatiq_args += ["--queues", *queues]
    parsed = make_argument_parser().parse_args(dramatiq_args)  # type: ignore[no-untyped-call]
    result: int = dramatiq_main(parsed)  # type: ignore[no-untyped-call]
    return result


def _scheduler(args: argparse.Namespace) -> int:
    import asyncio

    from engineroom.core.shutdown import ExitDeadline
    from engineroom.scheduler.process import serve_scheduler

    deadline = ExitDeadline()
    asyncio.run(serve_scheduler(get_settings(), deadline, grace_s=args.grace_s))
    return deadline.finish(0)


def _token(args: argparse.Namespace) -> int:
    from engineroom.services.tokens import issue_token

    print(issue_token(get_settings(), user_id=args.user, tenant_id=args.tenant, admin=args.admin, ttl_s=args.ttl_s))
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    import asyncio

    from engineroom.core.durations import parse_duration
    from engineroom.models.job import JobState
    from engineroom.services.cleanup import delete_finished_jobs

    try:
        older_than = parse_duration(args.older_than)
        states = [JobState(state) for state in args.state] if args.state else None
        count = asyncio.run(delete_finished_jobs(get_settings(), older_than, states, dry_run=args.dry_run))
    except ValueError as exc:
        print(f"engineroom cleanup: {exc}", file=sys.stderr)
        return 2
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {count} finished job(s) older than {args.older_than}")
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    import asyncio

    from engineroom.core.errors import EngineroomError
    from engineroom.scheduler.reconcile_once import reconcile_engines

    engines = _engines(",".join(args.engine or []))
    try:
        reports = asyncio.run(reconcile_engines(get_settings(), engines, dry_run=args.dry_run))
    except EngineroomError as exc:
        print(f"engineroom reconcile: {type(exc).__name__}: {exc.detail}", file=sys.stderr)
        return 1
    for report in reports:
        queue = report.queue
        held = "unknown" if queue is None else "missing" if not queue.exists else f"{queue.ready} ready"
        done = "" if args.dry_run else f", re-sent {report.resent}"
        print(f"{report.engine}: {report.expected} queued job(s) expected in RabbitMQ (queue: {held}){done}")
    verb = "would re-send" if args.dry_run else "re-sent"
    total = sum(report.expected if args.dry_run else report.resent for report in reports)
    print(f"{verb} {total} job(s)")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from engineroom.client.commands import submit_job

    wait_s = args.wait_timeout_s if args.wait else None
    return _client_command(
        "submit",
        lambda: submit_job(
            _client_config(args), args.task, args.payload, priority=args.priority, wait_s=wait_s, emit=print
        ),
    )


def _watch(args: argparse.Namespace) -> int:
    import asyncio

    from engineroom.client.commands import watch_events

    return _client_command("watch", lambda: asyncio.run(watch_events(_client_config(args), args.job_id, print)))


def _client_config(args: argparse.Namespace) -> ClientConfig:
    from engineroom.client.config import ClientConfig

    return ClientConfig.from_env(args.url, args.token)


def _client_command(name: str, run: Callable[[], int]) -> int:
    """The API's refusals as one line on stderr and exit code 1, not a traceback; Ctrl-C exits 130."""
    from engineroom.core.errors import EngineroomError

    try:
        return run()
    except EngineroomError as exc:
        print(f"engineroom {name}: {type(exc).__name__}: {exc.detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dev(args: argparse.Namespace) -> int:
    from engineroom.dev import run_dev

    return run_dev(host=args.host, port=args.port, data_dir=Path(args.data_dir), threads=args.threads)


def _engines(value: str | None) -> list[str]:
    if not value:
        return list(ENGINES)
    engines = [engine.strip() for engine in value.split(",") if engine.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise SystemExit(f"unknown engine(s): {', '.join(unknown)}; engines are {', '.join(ENGINES)}")
    return engines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="engineroom", description="A job system for AI-engine workloads.")
    commands = parser.add_subparsers(dest="command", required=True)

    api = commands.add_parser("api", help="run the REST + WebSocket gateway")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument(
        "--grace-s",
        type=float,
        default=API_GRACE_S,
        help="on SIGTERM, how long open requests may finish; it exits within this plus a few seconds",
    )
    api.set_defaults(run=_api)

    worker = commands.add_parser("worker", help="run Dramatiq workers for engine queues")
    worker.add_argument("--engines", help=f"comma-separated; default all of {','.join(ENGINES)}")
    worker.add_argument("--processes", type=int, help="worker processes (default 1)")
    worker.add_argument(
        "--autoscale",
        type=_process_range,
        metavar="MIN:MAX",
        help="instead of --processes: run MIN to MAX worker processes by backlog (ENGINEROOM_AUTOSCALE_*)",
    )
    worker.add_argument("--threads", type=int, default=8)
    worker.add_argument(
        "--notifications",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also deliver notification emails and webhooks (default: yes)",
    )
    worker.add_argument(
        "--grace-s",
        type=float,
        default=600.0,
        help="on SIGTERM, how long running jobs may finish before the rest go back to the queue; it exits within "
        "this plus a few seconds",
    )
    worker.set_defaults(run=_worker)

    scheduler = commands.add_parser("scheduler", help="release retries, recover orphaned jobs, send the outbox")
    scheduler.add_argument(
        "--grace-s",
        type=float,
        default=SCHEDULER_GRACE_S,
        help="on SIGTERM, how long handing over (its lease, the notification in flight) may take; it exits within "
        "this plus a few seconds",
    )
    scheduler.set_defaults(run=_scheduler)

    token = commands.add_parser("token", help="print a JWT signed with ENGINEROOM_JWT_SECRET")
    token.add_argument("--user", required=True)
    token.add_argument("--tenant", required=True)
    token.add_argument("--admin", action="store_true")
    token.add_argument("--ttl-s", type=int, default=86400)
    token.set_defaults(run=_token)

    cleanup = commands.add_parser("cleanup", help="delete finished jobs older than a cutoff (MongoDB, all tenants)")
    cleanup.add_argument("--older-than", required=True, help="e.g. 12h, 7d, 2w (by finished_at)")
    cleanup.add_argument("--state", action="append", help="completed, failed or cancelled; repeatable; default all")
    cleanup.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    cleanup.set_defaults(run=_cleanup)

    reconcile = commands.add_parser(
        "reconcile",
        help="send again the messages of queued jobs, after RabbitMQ lost its queues (MongoDB is the truth)",
    )
    reconcile.add_argument("--engine", action="append", help="one engine; repeatable; default all")
    reconcile.add_argument("--dry-run", action="store_true", help="count the jobs and look at the queues, send nothing")
    reconcile.set_defaults(run=_reconcile)

    submit = commands.add_parser("submit", help="submit a job over the API; --wait prints its result")
    _add_client_options(submit)
    submit.add_argument("task", help="<engine>.<name>, as GET /tasks lists them")
    submit.add_argument("--payload", default="{}", help="the payload as a JSON object")
    submit.add_argument("--priority", help="0-10, or low, normal, high, critical")
    submit.add_argument("--wait", action="store_true", help="wait for the job and print its result as JSON")
    submit.add_argument("--wait-timeout-s", type=float, default=300.0)
    submit.set_defaults(run=_submit)

    watch = commands.add_parser("watch", help="print events as JSON lines, resuming across dropped connections")
    _add_client_options(watch)
    watch.add_argument("job_id", nargs="?", help="that job's events until it finishes; default all of yours")
    watch.set_defaults(run=_watch)

    dev = commands.add_parser("dev", help="everything in one command, for a laptop")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--threads", type=int, default=8, help="worker threads")
    dev.add_argument("--data-dir", default=os.path.join(".", ".engineroom"))
    dev.set_defaults(run=_dev)
    return parser


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="the API's base URL (default: $ENGINEROOM_URL, else http://127.0.0.1:8000)")
    parser.add_argument("--token", help="a JWT (default: $ENGINEROOM_TOKEN)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in CLIENT_COMMANDS:  # a client machine has no server settings to read
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    elif args.command != "worker":  # dramatiq's CLI configures its own; actors/worker.py formats it
        configure_logging(get_settings().log_format)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
