"""One Dramatiq actor per engine, each on its own RabbitMQ queue. Messages carry the job id only."""

from __future__ import annotations

from dramatiq import Actor, Broker, Middleware, Worker
from dramatiq.middleware import AsyncIO

from engineroom.actors.runner import JobRunner
from engineroom.core.config import ENGINES, Settings

#: Dramatiq's TimeLimit would kill jobs at 10 minutes; job time limits come from the job document instead.
ACTOR_TIME_LIMIT_MS = 7 * 24 * 3600 * 1000


class _RunnerLifecycle(Middleware):
    """Starts the runner's heartbeat and cancel listener with the worker, and closes them (and its database
    client) once worker threads are done, before ``AsyncIO`` stops the loop they use.

    Added after ``AsyncIO``: Dramatiq runs ``after_*`` hooks in reverse order, so this one's shutdown runs first.
    """

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self.runner.start()

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self.runner.close()


def declare_engine_actors(broker: Broker, settings: Settings, runner: JobRunner) -> dict[str, Actor[[str], None]]:
    """Declare the eight engine actors on ``broker``; each runs job messages through ``runner``."""
    broker.add_middleware(_RunnerLifecycle(runner), after=AsyncIO)
    actors: dict[str, Actor[[str], None]] = {}
    for engine in ENGINES:
        queue = settings.queue_name(engine)

        def run(job_id: str) -> None:
            runner.run_job(job_id)

        run.__name__ = run.__qualname__ = f"run_{engine}_job"
        actors[engine] = Actor(
            run,
            broker=broker,
            actor_name=queue,
            queue_name=queue,
            priority=0,
            # Retries are decided from the job document, never by Dramatiq from worker memory (dramatiq#827).
            options={"max_retries": 0, "time_limit": ACTOR_TIME_LIMIT_MS},
        )
    return actors
