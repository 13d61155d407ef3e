"""The whole suite: every benchmark, one combined table of engineroom against its baselines, one JSON file.

Runs, in order: throughput (``burst`` with ``--batch-size``, jobs through ``POST /jobs/batch``, the engine's limit
raised to the worker's threads, beside the floor and raw Dramatiq), the floor alone (``floor``: the plain
Dramatiq actor with a minimal job document, one insert per job and ``insert_many``), the backlog (``backlog``:
jobs behind ``general``'s default limit, with a scheduler, beside the floor), latency (``latency``), batch submit
(``batch``), memory (``delayed``), WebSocket fan-out (``ws``) and artifact MB/s against the driver's GridFS
(``artifacts``). Each benchmark interleaves its own repeats (engineroom, baseline, engineroom, baseline, ...) and
measures its baselines in the same run; the WebSocket one runs each side once (it has no repeats). Each line of the
table gives the engineroom median and min..max, the baseline's, their ratio, the target and whether it is met.

Sizes: the benchmarks' defaults, except that throughput and the backlog run 2,000 jobs (``--full``: 10,000, the
issues' figure); ``--quick`` shrinks everything to a smoke run whose figures check that the suite works, not how
fast anything is. A benchmark that fails is reported (its error in the JSON and the table) and the others still
run.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import artifacts, backlog, batch_submit, burst, delayed, floor, latency, ws_fanout
from bench._common import (
    RESULTS_DIR,
    Comparison,
    add_run_options,
    comparison_table,
    machine,
    parser_for,
    spread,
    write_result,
)

DEFAULT_OUTPUT = RESULTS_DIR / "suite.json"


@dataclass(frozen=True)
class Part:
    """One benchmark of the suite: its options (as on its command line), how to run it and read its lines."""

    name: str
    argv: list[str]
    run: Callable[[list[str]], dict[str, Any]]
    comparisons: Callable[[dict[str, Any]], list[Comparison]]


def _runner(parse: Callable[[list[str] | None], tuple[Any, Path]], run: Callable[[Any], dict[str, Any]]) -> Any:
    """A benchmark's ``run`` on the config its own parser makes of ``argv``: defaults and checks stay its own."""
    return lambda argv: run(parse(argv)[0])


def ws_comparisons(result: dict[str, Any]) -> list[Comparison]:
    """The fan-out lines over its interleaved repeats (engineroom, then the bare Starlette baseline, each time)."""
    config = result["config"]
    by_server: dict[str, list[dict[str, Any]]] = {}
    for phase in result["phases"]:
        by_server.setdefault(phase["server"], []).append(phase)

    def values(server: str, read: Callable[[dict[str, Any]], float]) -> dict[str, float]:
        return spread([float(read(phase)) for phase in by_server[server]])

    def p99(phase: dict[str, Any]) -> float:
        return float(phase["latency_ms"].get("p99", -1.0))

    sockets = f"{config['clients']} sockets, {config['active']} active"
    engineroom_p99 = values("engineroom", p99)
    return [
        Comparison(
            figure=f"ws fan-out deliveries/s ({sockets})",
            engineroom=values("engineroom", lambda phase: phase["deliveries_per_s"]),
            baseline=values("baseline", lambda phase: phase["deliveries_per_s"]),
            baseline_is="bare Starlette fan-out of the same exchange (bench/ws_baseline.py)",
            target="-",
            met=None,
        ),
        Comparison(
            figure=f"ws fan-out latency p99 ms ({sockets})",
            engineroom=engineroom_p99,
            baseline=values("baseline", p99),
            baseline_is="bare Starlette fan-out of the same exchange (bench/ws_baseline.py)",
            target="<= 100 ms",
            met=engineroom_p99["median"] <= 100.0,
        ),
    ]


def parts(repeat: int, quick: bool, full: bool, amqp_url: str, backlog_cap_s: float) -> list[Part]:
    """The benchmarks with the suite's sizes; ``--repeat`` and ``--amqp-url`` go to each that has them."""
    common = ["--repeat", str(repeat), "--amqp-url", amqp_url]
    jobs = "200" if quick else "10000" if full else "2000"
    batch_size = "100" if quick else "1000"
    throughput = ["--jobs", jobs, "--batch-size", batch_size, "--concurrency", "2"]
    backlog_size = ["--jobs", "150", "--window", "50"] if quick else ["--jobs", jobs]
    backlog_argv = [*common, *backlog_size, "--batch-size", batch_size, "--time-cap-s", f"{backlog_cap_s:g}"]
    return [
        Part("throughput", [*common, *throughput], _runner(burst.parse_args, burst.run), burst.comparisons),
        Part(
            "floor",
            [*common, "--jobs", "200" if quick else "2000", "--batch-size", batch_size],
            _runner(floor.parse_args, floor.run),
            floor.comparisons,
        ),
        Part("backlog", backlog_argv, _runner(backlog.parse_args, backlog.run), backlog.comparisons),
        Part(
            "latency",
            [*common, *(["--jobs", "100", "--warmup", "5"] if quick else [])],
            _runner(latency.parse_args, latency.run),
            latency.comparisons,
        ),
        Part(
            "batch",
            [*common, *(["--jobs", "2000"] if quick else [])],
            _runner(batch_submit.parse_args, batch_submit.run),
            batch_submit.comparisons,
        ),
        Part(
            "memory",
            [*common, *(["--jobs", "2000"] if quick else [])],
            _runner(delayed.parse_args, delayed.run),
            delayed.comparisons,
        ),
        Part(
            "ws",
            [
                *common,
                *(["--clients", "200", "--active", "100", "--users", "100", "--duration-s", "3"] if quick else []),
            ],
            _runner(ws_fanout.parse_args, ws_fanout.run),
            ws_comparisons,
        ),
        Part(
            "artifacts",
            ["--repeat", str(repeat), "--size-mb", "16" if quick else "64"],
            _runner(artifacts.parse_args, artifacts.run),
            artifacts.comparisons,
        ),
    ]


def failed(part: Part, error: str) -> Comparison:
    """A table line for a benchmark that did not finish: no figure, target not met."""
    return Comparison(f"{part.name}: FAILED ({error[:60]})", spread([0.0]), None, "-", "-", met=False)


def run(selected: list[Part]) -> dict[str, Any]:
    """Each benchmark in turn; its lines, or its error, and its whole report go into one result."""
    load_before = os.getloadavg()
    rows: list[Comparison] = []
    reports: dict[str, Any] = {}
    for part in selected:
        print(f"=== {part.name}: {' '.join(part.argv)}")
        try:
            result = part.run(part.argv)
            lines = part.comparisons(result)
        except Exception as exc:  # one benchmark's failure must not lose the others' figures
            traceback.print_exc()
            reports[part.name] = {"argv": part.argv, "error": repr(exc)}
            rows.append(failed(part, repr(exc)))
            continue
        reports[part.name] = {"argv": part.argv, **result}
        rows += lines
    table = comparison_table(rows)
    figures = [{**asdict(row), "ratio": row.ratio_or_medians} for row in rows]
    return {"at": datetime.now(UTC).isoformat(), "figures": figures, "table": table, "benchmarks": reports} | machine(
        load_before
    )


def parse_args(argv: list[str] | None) -> tuple[list[Part], Path]:
    parser = parser_for("all", __doc__)
    add_run_options(parser, repeat=3, output=DEFAULT_OUTPUT, workers=False)
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="smoke-run sizes: checks the suite, not the speed")
    sizes.add_argument("--full", action="store_true", help="throughput and backlog with 10,000 jobs")
    names = ("throughput", "floor", "backlog", "latency", "batch", "memory", "ws", "artifacts")
    parser.add_argument("--only", nargs="+", choices=names, help="run these benchmarks only")
    parser.add_argument(
        "--backlog-cap-s", type=float, default=600.0, help="stop each backlog repeat this long after it started"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    every = parts(args.repeat, args.quick, args.full, args.amqp_url, args.backlog_cap_s)
    return [part for part in every if not args.only or part.name in args.only], args.output


def main(argv: list[str] | None = None) -> int:
    selected, output = parse_args(argv)
    result = run(selected)
    write_result(output, result)
    print(result["table"])
    print(f"cpus: {result['cpus']}  load average before/after: {result['loadavg_1_5_15']}")
    for name, report in result["benchmarks"].items():
        if "log_dir" in report:
            findings = sum(count for counts in report["logs"].values() for count in counts.values())
            print(f"  {name:<11} logs {report['log_dir']}  warning/error lines: {findings}")
    print(f"written: {output}")
    failures = [name for name, report in result["benchmarks"].items() if "error" in report]
    for name in failures:
        print(f"FAILED: {name}: {result['benchmarks'][name]['error']}")
    return 1 if failures else 0
