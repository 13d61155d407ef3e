"""``python -m bench [burst|delayed] [options]``: the burst benchmark (the default) or the delayed-jobs one."""

import sys

from bench import burst, delayed

BENCHMARKS = {"burst": burst.main, "delayed": delayed.main}

arguments = sys.argv[1:]
name = arguments.pop(0) if arguments and arguments[0] in BENCHMARKS else "burst"
raise SystemExit(BENCHMARKS[name](arguments))
