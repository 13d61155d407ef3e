"""``python -m bench [burst|delayed|ws] [options]``: the burst benchmark (the default), the delayed-jobs one or the
WebSocket fan-out one."""

import sys

from bench import burst, delayed, ws_fanout

BENCHMARKS = {"burst": burst.main, "delayed": delayed.main, "ws": ws_fanout.main}

arguments = sys.argv[1:]
name = arguments.pop(0) if arguments and arguments[0] in BENCHMARKS else "burst"
raise SystemExit(BENCHMARKS[name](arguments))
