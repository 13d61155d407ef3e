"""Ports for the servers tests start, one range per pytest-xdist worker, so parallel workers never pick the same.

A port from the kernel (bind to 0) is free only until it is handed out again: two workers that each probe one and
start a server on it a second later may get the same. Each worker takes its ports in turn from its own range below
the kernel's ephemeral range (32768 and up on Linux), where the kernel never hands one out by itself, starting at a
random place in it so that two runs on one machine (two checkouts) rarely walk the same ports at the same time.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
from collections.abc import Iterator

#: The first port of worker 0's range; each worker has ``PORTS_PER_WORKER`` after its start. Four ranges fit below
#: 32768; a fifth worker shares the first one's (still starting at a random place).
FIRST_PORT = 20_000
PORTS_PER_WORKER = 3_000
RANGES = 4


def worker_index() -> int:
    """0 for ``gw0`` (and for a run without xdist), 1 for ``gw1``, ..."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name.removeprefix("gw") or 0)


def _candidates() -> Iterator[int]:
    first = FIRST_PORT + worker_index() % RANGES * PORTS_PER_WORKER
    ports = list(range(first, first + PORTS_PER_WORKER))
    offset = random.randrange(PORTS_PER_WORKER)
    return itertools.cycle(ports[offset:] + ports[:offset])


_next_port = _candidates()


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """The next port of this worker's range that nothing is bound to (a port in TIME_WAIT counts as taken)."""
    for _ in range(PORTS_PER_WORKER):
        port = next(_next_port)
        if is_free(port, host):
            return port
    raise RuntimeError(f"no free port left in worker {worker_index()}'s range")
