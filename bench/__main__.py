"""``python -m bench [all|burst|latency|batch|delayed|ws] [options]``: every benchmark with one combined table
(``all``, the default), or one of them."""

import sys

from bench import batch_submit, burst, delayed, latency, suite, ws_fanout

BENCHMARKS = {
    "all": suite.main,
    "burst": burst.main,
    "latency": latency.main,
    "batch": batch_submit.main,
    "delayed": delayed.main,
    "ws": ws_fanout.main,
}

arguments = sys.argv[1:]
name = arguments.pop(0) if arguments and arguments[0] in BENCHMARKS else "all"
raise SystemExit(BENCHMARKS[name](arguments))
