"""Entry module for ``dramatiq engineroom.actors.worker``: builds this process's broker, its engine actors and the
email and webhook delivery actors (which run only if the worker consumes the notifications queue)."""

from __future__ import annotations

from dramatiq.middleware.prometheus import Prometheus

from engineroom.actors.delivery import Deliverer, declare_delivery_actors
from engineroom.actors.engines import declare_engine_actors
from engineroom.actors.presence import WorkerPresence
from engineroom.actors.runner import JobRunner
from engineroom.actors.shutdown import ShutdownDeadline
from engineroom.core.config import get_settings
from engineroom.core.logs import configure_logging
from engineroom.core.shutdown import worker_grace_s
from engineroom.messaging.broker import build_broker
from engineroom.messaging.bus import rabbit_event_bus
from engineroom.services.registry import load_task_modules

settings = get_settings()
configure_logging(settings.log_format)  # the handlers dramatiq's CLI gave this worker process
load_task_modules(settings.task_module_names)
broker = build_broker(settings)
runner = JobRunner(settings, rabbit_event_bus(settings), broker)
actors = declare_engine_actors(broker, settings, runner)
deliverer = Deliverer(settings)
delivery_actors = declare_delivery_actors(broker, settings, deliverer)
# After the engine actors: its shutdown hook must run before the runner closes its stores (actors/presence.py).
if settings.worker_metrics_port:  # Dramatiq's exposition server; why it fits: actors/worker_metrics.py
    broker.add_middleware(Prometheus())
presence = WorkerPresence(settings, runner)
presence.install(broker)
# Last: its shutdown hook runs first, bounding the database calls of the others (actors/shutdown.py).
shutdown = ShutdownDeadline(runner, presence, [runner, deliverer], grace_s=worker_grace_s())
shutdown.install(broker)
