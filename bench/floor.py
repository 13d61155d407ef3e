"""Floor benchmark: the plain Dramatiq actor with a minimal job document, on the same SecantusDB, against raw
Dramatiq, in one run.

(a) floor: this process inserts ``{state: "queued"}`` documents into collection ``jobs`` of a fresh database on
the run's ``secantusd-py`` (``insert_one`` per job, or ``insert_many`` of ``--batch-size``), and after each insert
enqueues one message per document carrying its id; a ``dramatiq`` worker (``bench/floor_worker.py``, same
processes and threads as every side) makes two ``update_one`` per job, ``running`` then ``completed`` with a
result. Timed from the first insert until the last job completed. The throughput (``burst``) and ``backlog``
benchmarks measure the same floor in their own runs, beside engineroom.

(b) raw Dramatiq: as many no-op messages to a plain ``dramatiq`` worker (``bench/raw_worker.py``).

Reported per floor mode: jobs/s, database round trips per job (SecantusDB's ``serverStatus``: ``opcounters``,
one per command, and ``network.numRequests``, every request) and CPU ms per job of SecantusDB, the floor worker
and this process (the producer). Repeats interleave (one insert per job, ``insert_many``, raw, ...).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench._baselines import FloorSample, RawSample, floor_figures, floor_mode, measure_floor, measure_raw
from bench._common import (
    RESULTS_DIR,
    Comparison,
    add_run_options,
    config_from_args,
    machine,
    parser_for,
    publish,
    run_context,
    run_report,
)

DEFAULT_OUTPUT = RESULTS_DIR / "floor.json"
#: The issue's figures for this floor on this kind of machine, jobs/s by documents per insert.
ISSUE_FLOOR_JOBS_PER_S = {1: 228.0, 1000: 320.0}


@dataclass(frozen=True)
class FloorBenchConfig:
    jobs: int
    batch_size: int
    processes: int
    threads: int
    repeat: int
    amqp_url: str
    timeout_s: float


def run(config: FloorBenchConfig) -> dict[str, Any]:
    """All repeats, interleaved: the floor with one insert per job, with ``insert_many``, then raw Dramatiq."""
    modes: dict[int, list[FloorSample]] = {1: [], config.batch_size: []}
    raw: list[RawSample] = []
    load_before = os.getloadavg()
    with run_context(config, "floor", "floor-raw") as ctx:
        for repeat in range(1, config.repeat + 1):
            for insert_batch, samples in modes.items():
                samples.append(sample := measure_floor(ctx, repeat, config.jobs, insert_batch, config.timeout_s))
                print(f"  #{repeat} floor, {floor_mode(insert_batch):<20} {sample.jobs_per_s:8.1f} jobs/s")
            raw.append(raw_sample := measure_raw(ctx, repeat, config.jobs, config.timeout_s))
            print(f"  #{repeat} raw dramatiq {raw_sample.messages_per_s:8.1f} msgs/s")
    rows = [row for insert_batch, samples in modes.items() for row in floor_figures(_label(insert_batch), samples)]
    rows.append(("raw dramatiq msgs/s", [s.messages_per_s for s in raw]))
    floors = [sample for samples in modes.values() for sample in samples]
    report = run_report(config, ctx.work_dir, [], raw, rows)
    return {**report, "floor": [asdict(sample) for sample in floors], **machine(load_before)}


def _label(insert_batch: int) -> str:
    return f"floor {floor_mode(insert_batch)}"


def comparisons(result: dict[str, Any]) -> list[Comparison]:
    """The suite's floor lines: each mode's jobs/s against raw Dramatiq's msgs/s. No target: it is a baseline;
    the issue's figure for it on this kind of machine is named in the line."""
    summary, config = result["summary"], result["config"]
    lines = []
    for insert_batch in dict.fromkeys((1, config["batch_size"])):
        issue = ISSUE_FLOOR_JOBS_PER_S.get(insert_batch)
        lines.append(
            Comparison(
                figure=f"floor jobs/s ({config['jobs']} jobs, {floor_mode(insert_batch)})",
                engineroom=summary[f"{_label(insert_batch)} jobs/s"],
                baseline=summary["raw dramatiq msgs/s"],
                baseline_is="raw Dramatiq no-op actors, same RabbitMQ, same processes and threads",
                target="-" if issue is None else f"issue saw {issue:g}",
                met=None,
            )
        )
    return lines


def parse_args(argv: list[str] | None) -> tuple[FloorBenchConfig, Path]:
    parser = parser_for("floor", __doc__)
    add_run_options(parser, repeat=3, output=DEFAULT_OUTPUT)
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per floor mode and repeat (raw: as many)")
    parser.add_argument("--batch-size", type=int, default=1000, help="documents per insert_many")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="per side and repeat")
    args = parser.parse_args(argv)
    if min(args.jobs, args.batch_size, args.repeat) < 1:
        parser.error("--jobs, --batch-size and --repeat must be at least 1")
    return config_from_args(FloorBenchConfig, args), args.output


def main(argv: list[str] | None = None) -> int:
    config, output = parse_args(argv)
    print(
        f"floor: {config.jobs} jobs, one insert per job and insert_many of {config.batch_size}, x {config.repeat}"
        f" repeats, workers {config.processes}p x {config.threads}t"
    )
    result = run(config)
    publish(output, result)
    return 0
