"""Setting up the metrics of ``engineroom worker``, in its parent process, before Dramatiq is imported.

Dramatiq's ``Prometheus`` middleware fits: its exposition server runs once per ``engineroom worker`` command
(a Dramatiq "fork" process) and serves prometheus-client's multiprocess mode, summing the metrics every worker
process writes to files. So ``--processes 4`` is one scrape target on one port, and engineroom's own job
metrics (``core/metrics.py``) ride on the same server next to Dramatiq's ``dramatiq_messages_total`` & co;
nothing is counted twice by hand. What it needs, and why this runs first:

- its host, port and files directory are read from ``dramatiq_prom_*`` variables when ``dramatiq`` is
  imported, and prometheus-client picks multiprocess mode from ``PROMETHEUS_MULTIPROC_DIR`` when *it* is
  imported: both must be set before either import, in the parent the worker processes fork from;
- its default directory is shared by every Dramatiq command on the host and never cleared, which would mix
  two commands' metrics and keep a dead run's: each command gets a fresh directory, removed on exit.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from engineroom.core.config import Settings


@contextmanager
def worker_metrics_environment(settings: Settings) -> Iterator[str | None]:
    """Point Dramatiq's exposition server and prometheus-client's multiprocess files at this command's own
    directory while the body runs; yields the directory, or ``None`` with metrics turned off (port 0)."""
    if not settings.worker_metrics_port:
        yield None
        return
    directory = tempfile.mkdtemp(prefix="engineroom-metrics-")
    variables = {
        "dramatiq_prom_db": directory,
        "PROMETHEUS_MULTIPROC_DIR": directory,
        "dramatiq_prom_host": settings.worker_metrics_host,
        "dramatiq_prom_port": str(settings.worker_metrics_port),
    }
    before = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield directory
    finally:
        # Put the environment back: a process started later (the command run in process, as tests do) must not
        # inherit a directory that is about to be removed.
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(directory, ignore_errors=True)
