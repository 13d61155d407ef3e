"""Settings, read from the environment only (prefix ``ENGINEROOM_``)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The secret used when none is configured; refused outside ``env=dev``.
DEV_JWT_SECRET = "engineroom-dev-secret-not-for-production"

#: Engines and their default cluster-wide concurrency (DESIGN.md).
DEFAULT_ENGINE_CONCURRENCY: dict[str, int] = {
    "text_intelligence": 3,
    "image_generation": 2,
    "audio_generation": 2,
    "video_pipeline": 1,
    "creative_assistant": 3,
    "social_media_planner": 2,
    "discovery_analytics": 2,
    "general": 2,
}

ENGINES: tuple[str, ...] = tuple(DEFAULT_ENGINE_CONCURRENCY)


#: An engine slot's lease, in job leases (``Settings.slot_lease_s``).
SLOT_LEASE_JOB_LEASES = 4


class Settings(BaseSettings):
    """Everything configurable about an engineroom process."""

    model_config = SettingsConfigDict(env_prefix="ENGINEROOM_", extra="ignore")

    env: Literal["dev", "prod"] = "dev"
    #: ``auto``: JSON lines unless stderr is a terminal.
    log_format: Literal["auto", "json", "text"] = "auto"
    mongodb_url: str = "mongodb://127.0.0.1:27017/?retryWrites=false"
    mongodb_db: str = "engineroom"
    #: The ``jobs`` indexes made (``store.client.JOB_INDEXES``): ``auto`` is ``minimal`` on SecantusDB, where every
    #: index costs each job write, and ``full`` on MongoDB, where the dashboards' own indexes are cheap.
    mongodb_indexes: Literal["auto", "minimal", "full"] = "auto"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    #: Prefix for queue and exchange names, so several deployments (or test runs) can share one vhost.
    namespace: str = ""
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    #: Comma-separated modules of user tasks, imported by every process so the registry is the same everywhere.
    task_modules: str = ""
    max_payload_bytes: int = 1024 * 1024
    #: Where artifacts (files tasks save) are kept: unset, GridFS in the job database; ``s3://bucket/prefix`` an
    #: S3-compatible store (endpoint and credentials from ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).
    artifacts_url: str | None = None
    #: Largest single artifact, and largest total of one job's artifacts.
    max_artifact_bytes: int = 2 * 1024**3
    max_job_artifacts_bytes: int = 8 * 1024**3
    #: Largest JSON result a task may return (stored in the job document); bigger outputs are artifacts.
    max_result_bytes: int = 1024 * 1024
    #: How long a signed artifact link (``?sig=&exp=``) from ``GET /jobs/{id}/artifacts`` works.
    artifact_link_ttl_s: float = 900.0
    #: How often the scheduler deletes the artifacts of jobs that are gone (expired by ``retention_days``).
    artifact_sweep_interval_s: float = 600.0
    retention_days: int = 30
    #: Jobs one user may submit per minute (per ``rate_window_s``), across every gateway; unset: no limit.
    rate_limit_per_minute: int | None = Field(None, ge=1)
    #: Jobs one tenant's users together may submit per minute; unset: no limit.
    tenant_rate_limit_per_minute: int | None = Field(None, ge=1)
    #: ``smtp://user:pass@host:port`` (``?starttls=true`` to upgrade), or ``smtps://`` for TLS from the start.
    smtp_url: str | None = None
    #: Frames a gateway buffers per socket; a client that falls further behind is disconnected (close 1013).
    ws_send_buffer: int = 1000
    #: How long events are kept for sockets to resume from (the ``events`` collection's TTL).
    events_ttl_s: float = 24 * 3600.0
    #: The ``From`` of notification emails.
    smtp_from: str = "engineroom@localhost"
    #: How long a notifier uses preferences it read (each user's, and which opt-in event types anyone enabled)
    #: before reading them again: a preferences change reaches a notifier in another process within this; 0 reads
    #: them for every event.
    notification_preferences_cache_s: float = Field(5.0, ge=0)
    #: Users whose preferences a notifier keeps (least recently used dropped first).
    notification_preferences_cache_users: int = Field(10_000, ge=1)
    #: Email and webhook deliveries: attempts after the first, and the backoff between them (Dramatiq's
    #: ``Retries``, held in worker memory: keep the cap well under RabbitMQ's 30-minute ``consumer_timeout``).
    delivery_max_retries: int = 5
    delivery_min_backoff_s: float = 5.0
    delivery_max_backoff_s: float = 600.0
    #: Seconds one email or webhook delivery attempt may take.
    delivery_timeout_s: float = 10.0
    #: Let webhooks reach loopback, private and link-local addresses (a local receiver in development and tests);
    #: off by default, so a user's webhook URL cannot reach services inside the cluster.
    webhook_allow_private: bool = False
    #: Backoff before retry n is uniform in [0, min(base * 2**n, cap)] ("full jitter").
    retry_backoff_base_s: float = 2.0
    retry_backoff_cap_s: float = 3600.0
    #: A running job whose worker stops renewing its lease for this long is re-queued by the scheduler.
    job_lease_s: float = 30.0
    #: How often the scheduler looks for due retries, expired leases and undispatched jobs.
    scheduler_interval_s: float = 0.5
    #: The window of ``max_starts_per_minute``: 60 s, shorter only to test rate limits quickly.
    rate_window_s: float = 60.0
    #: A job still flagged for sending (the outbox) this long after it was queued is (re)sent by the scheduler.
    dispatch_grace_s: float = 5.0
    #: How often the scheduler checks that each engine's RabbitMQ queue can still hold the jobs MongoDB holds as
    #: queued in it; a job queued within the last interval (or ``dispatch_grace_s``) is not yet expected there.
    broker_check_interval_s: float = 10.0
    #: Workers take no new jobs while the host's CPU or memory use (percent) is above these; unset: no limit.
    worker_max_cpu_percent: float | None = None
    worker_max_memory_percent: float | None = None
    #: A worker process whose resident memory passes this finishes its jobs, then exits to be restarted.
    worker_max_rss_mb: float | None = None
    #: Where ``engineroom worker`` serves its processes' metrics (Dramatiq's exposition server); 0 turns it off.
    worker_metrics_host: str = "0.0.0.0"
    worker_metrics_port: int = 9191
    #: Count every MongoDB command into ``engineroom_mongodb_commands_total`` (pymongo's command monitoring, a small
    #: cost per command): the round trips per job, for the bench and for diagnosing load. Off by default.
    count_mongodb_commands: bool = False
    #: ``engineroom worker --autoscale MIN:MAX`` adds a process when its engines' ready jobs per process stay above
    #: this for ``autoscale_sustain_s``, and removes one once none has been ready for ``autoscale_cooldown_s``.
    autoscale_backlog_per_process: float = 4.0
    autoscale_sustain_s: float = 30.0
    autoscale_cooldown_s: float = 300.0
    #: How often the autoscaler counts the backlog, reads the host and decides.
    autoscale_interval_s: float = 5.0

    @model_validator(mode="after")
    def _refuse_unsafe_production_values(self) -> Settings:
        if self.env == "prod":
            secret = self.jwt_secret.get_secret_value()
            if secret == DEV_JWT_SECRET or len(secret) < 32:
                raise ValueError("ENGINEROOM_JWT_SECRET must be set to at least 32 characters when ENGINEROOM_ENV=prod")
        for name in (
            "max_payload_bytes",
            "max_artifact_bytes",
            "max_job_artifacts_bytes",
            "max_result_bytes",
            "artifact_link_ttl_s",
            "artifact_sweep_interval_s",
            "retry_backoff_base_s",
            "retry_backoff_cap_s",
            "job_lease_s",
            "scheduler_interval_s",
            "broker_check_interval_s",
            "events_ttl_s",
            "ws_send_buffer",
            "delivery_min_backoff_s",
            "delivery_max_backoff_s",
            "delivery_timeout_s",
            "autoscale_backlog_per_process",
            "autoscale_sustain_s",
            "autoscale_cooldown_s",
            "autoscale_interval_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"ENGINEROOM_{name.upper()} must be positive")
        for name in ("worker_max_cpu_percent", "worker_max_memory_percent", "worker_max_rss_mb"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"ENGINEROOM_{name.upper()} must be positive when set")
        if self.artifacts_url and not self.artifacts_url.startswith("s3://"):  # empty: unset, GridFS
            raise ValueError("ENGINEROOM_ARTIFACTS_URL must be an s3://bucket/prefix URL, or unset for GridFS")
        if not 0 <= self.worker_metrics_port <= 65535:
            raise ValueError("ENGINEROOM_WORKER_METRICS_PORT must be a TCP port, or 0 for none")
        if self.delivery_max_retries < 0:
            raise ValueError("ENGINEROOM_DELIVERY_MAX_RETRIES must not be negative")
        return self

    @property
    def task_module_names(self) -> list[str]:
        return [name.strip() for name in self.task_modules.split(",") if name.strip()]

    @property
    def events_exchange(self) -> str:
        return f"{self.namespace}engineroom.events"

    @property
    def notifications_queue(self) -> str:
        """The Dramatiq queue of email and webhook deliveries."""
        return self.queue_name("notifications")

    @property
    def notifier_queue(self) -> str:
        """The durable RabbitMQ queue, bound to the events exchange, that the notifiers share."""
        return f"{self.namespace}engineroom.notifier"

    @property
    def slot_lease_s(self) -> float:
        """How long an engine slot stays held without renewal. Longer than a job's lease: a worker's slots must not
        lapse because its heartbeat is late (a saturated database), or another would start a job over the limit;
        the scheduler frees the slots of a worker that is gone once its heartbeat stops (``reclaim_slots``)."""
        return SLOT_LEASE_JOB_LEASES * self.job_lease_s

    def queue_name(self, engine: str) -> str:
        """The RabbitMQ queue that carries an engine's jobs."""
        return f"{self.namespace}{engine}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, built once on first use (not at import time)."""
    return Settings()
