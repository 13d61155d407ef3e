"""The Prometheus metrics every engineroom process counts into (``engineroom_`` prefix, base units).

They live in prometheus-client's default registry, the one process-wide exception to "no hidden global state":
a metric is process-wide by nature, registering it twice raises, and in a CLI worker prometheus-client's
multiprocess mode (set up by Dramatiq's ``Prometheus`` middleware, see ``cli.py``) writes every metric of every
worker process to files that one exposition server sums. Gauges that describe the cluster, not this process
(queue depth, running, limits, sockets) are read at scrape time instead: ``api/metrics.py``.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

#: Job durations run from a fraction of a second (demo tasks) to hours (video pipelines).
DURATION_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600)
#: HTTP requests: sub-millisecond reads to ``?wait=`` submits that hold a request open.
HTTP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

JOBS_SUBMITTED = Counter(
    "engineroom_jobs_submitted_total", "Jobs accepted by POST /jobs, batches and cron schedules.", ["engine", "task"]
)
JOBS_FINISHED = Counter(
    "engineroom_jobs_finished_total",
    "Jobs that reached a terminal state (completed, failed or cancelled).",
    ["engine", "task", "state"],
)
JOB_DURATION = Histogram(
    "engineroom_job_duration_seconds",
    "Seconds from a job's last start to its completion or final failure, measured on the worker.",
    ["engine", "task"],
    buckets=DURATION_BUCKETS_S,
)
EVENTS_PUBLISHED = Counter(
    "engineroom_events_published_total", "Events published to the events exchange, by event type.", ["type"]
)
EVENTS_DELIVERED = Counter(
    "engineroom_events_delivered_total", "Events queued to a WebSocket client, by event type.", ["type"]
)
HTTP_REQUESTS = Counter(
    "engineroom_http_requests_total",
    "HTTP requests answered by the gateway, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "engineroom_http_request_duration_seconds",
    "Seconds the gateway took to answer, by method and route template.",
    ["method", "route"],
    buckets=HTTP_BUCKETS_S,
)


def count_submitted(engine: str, task: str) -> None:
    JOBS_SUBMITTED.labels(engine, task).inc()


def count_finished(engine: str, task: str, state: str, *, duration_s: float | None = None) -> None:
    """Count a job that reached ``state`` (terminal); ``duration_s`` is its last attempt's run time, if it ran."""
    JOBS_FINISHED.labels(engine, task, state).inc()
    if duration_s is not None:
        JOB_DURATION.labels(engine, task).observe(max(duration_s, 0.0))


def count_published(event_type: str) -> None:
    EVENTS_PUBLISHED.labels(event_type).inc()


def count_delivered(event_type: str) -> None:
    EVENTS_DELIVERED.labels(event_type).inc()


MONGODB_COMMANDS = Counter(
    "engineroom_mongodb_commands_total",
    "Commands (round trips) this process sent to MongoDB, by command name: the database work per job.",
    ["command"],
)
