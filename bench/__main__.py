"""``python -m bench [burst|delayed|ws|soak] [options]``: the burst benchmark (the default), the delayed-jobs one, the
WebSocket fan-out one, or the soak run (not a benchmark: memory over time and stuck jobs)."""

import sys

from bench import burst, delayed, soak, ws_fanout

BENCHMARKS = {"burst": burst.main, "delayed": delayed.main, "ws": ws_fanout.main, "soak": soak.main}

arguments = sys.argv[1:]
name = arguments.pop(0) if arguments and arguments[0] in BENCHMARKS else "burst"
raise SystemExit(BENCHMARKS[name](arguments))
