"""``GET /metrics`` on the gateway, and the HTTP request metrics it shows.

Counters come from the process-wide registry (``core/metrics.py``). Per-engine queue figures and open sockets
describe the cluster or this app, not the process, so they are read when Prometheus scrapes: two queries (the
eight ``queues`` documents and one aggregation of queued and running jobs), never a count per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engineroom.core.config import ENGINES
from engineroom.core.errors import StoreUnavailable
from engineroom.core.metrics import HTTP_REQUEST_DURATION, HTTP_REQUESTS
from engineroom.models.queue import QueueDocument
from engineroom.notifications.websocket import Hub
from engineroom.store.queues import QueueStore
from engineroom.store.stats import JobStats

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

#: The route label of requests no route matched: raw paths would make one time series per URL scanned.
UNMATCHED_ROUTE = "unmatched"


class HttpMetrics:
    """Counts every HTTP request by method, route template (``/jobs/{job_id}``, not the id) and status, and
    times it. Pure ASGI, outermost, so error handlers' answers are counted with their real status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes the app becomes a 500 further out

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", UNMATCHED_ROUTE)
            HTTP_REQUESTS.labels(scope["method"], template, str(status)).inc()
            HTTP_REQUEST_DURATION.labels(scope["method"], template).observe(time.perf_counter() - started)


class _Snapshot(Collector):
    """Hands out metric families read just before; a fresh one per scrape."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def queue_families(queues: list[QueueDocument], active: dict[str, dict[str, int]]) -> list[Metric]:
    """``engineroom_queue_{depth,running,limit,paused}`` per engine from what the stores said."""
    depth = GaugeMetricFamily("engineroom_queue_depth", "Queued jobs not yet started, per engine.", labels=["engine"])
    running = GaugeMetricFamily("engineroom_queue_running", "Running jobs, per engine.", labels=["engine"])
    limit = GaugeMetricFamily("engineroom_queue_limit", "Cluster-wide max concurrency, per engine.", labels=["engine"])
    paused = GaugeMetricFamily("engineroom_queue_paused", "1 while the engine is paused.", labels=["engine"])
    by_engine = {queue.engine: queue for queue in queues}
    for engine in ENGINES:
        counts = active.get(engine, {})
        depth.add_metric([engine], counts.get("queued", 0))
        running.add_metric([engine], counts.get("running", 0))
        queue = by_engine.get(engine)
        if queue is not None:
            limit.add_metric([engine], queue.max_concurrency)
            paused.add_metric([engine], 1 if queue.paused else 0)
    return [depth, running, limit, paused]


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus exposition: this process's counters, then the queue and socket gauges read now."""
    queues: QueueStore = request.app.state.queues
    stats: JobStats = request.app.state.stats
    hub: Hub = request.app.state.hub
    try:
        families = queue_families(await queues.all(), await stats.active_by_engine())
    except StoreUnavailable:  # the counters are still worth a scrape; the gauges' absence shows the outage
        logger.warning("MongoDB did not answer; /metrics leaves out the queue gauges")
        families = []
    sockets = GaugeMetricFamily("engineroom_websocket_connections", "Open WebSocket connections on this gateway.")
    sockets.add_metric([], hub.connection_count)
    scraped = CollectorRegistry(auto_describe=False)
    scraped.register(_Snapshot([*families, sockets]))
    body = generate_latest(REGISTRY) + generate_latest(scraped)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
