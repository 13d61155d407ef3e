"""``python -m bench [all|burst|floor|backlog|latency|batch|delayed|ws|artifacts|soak] [options]``: every
benchmark with one combined table (``all``, the default), one of them, or the soak run (not a benchmark: memory over
time and stuck jobs)."""

import sys

from bench import artifacts, backlog, batch_submit, burst, delayed, floor, latency, soak, suite, ws_fanout

BENCHMARKS = {
    "all": suite.main,
    "burst": burst.main,
    "floor": floor.main,
    "backlog": backlog.main,
    "latency": latency.main,
    "batch": batch_submit.main,
    "delayed": delayed.main,
    "ws": ws_fanout.main,
    "artifacts": artifacts.main,
    "soak": soak.main,
}

arguments = sys.argv[1:]
name = arguments.pop(0) if arguments and arguments[0] in BENCHMARKS else "all"
raise SystemExit(BENCHMARKS[name](arguments))
