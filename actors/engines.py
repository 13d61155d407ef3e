"""One Dramatiq actor per engine, each on its own RabbitMQ queue. Messages carry the job id only."""

from __future__ import annotations

from dramatiq import Actor, Broker

from engineroom.actors.admission import install_gate
from engineroom.actors.loop_stores import on_worker_lifecycle
from engineroom.actors.runner import JobRunner
from engineroom.core.config import ENGINES, Settings

#: Dramatiq's TimeLimit would kill jobs at 10 minutes; job time limits come from the job document instead.
ACTOR_TIME_LIMIT_MS = 7 * 24 * 3600 * 1000


def declare_engine_actors(broker: Broker, settings: Settings, runner: JobRunner) -> dict[str, Actor[[str], None]]:
    """Declare the eight engine actors on ``broker``; each runs job messages through ``runner``."""
    # The runner's heartbeat and cancel listener start with the worker; they and its database client stop once
    # worker threads are done.
    on_worker_lifecycle(broker, boot=runner.start, shutdown=runner.close)
    # Each engine's consumer takes a message only with a slot for it: the backlog waits in RabbitMQ.
    install_gate(broker, settings, runner.gate())
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
