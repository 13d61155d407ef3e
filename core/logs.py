"""Logging: JSON lines when stderr is not a terminal (collectors parse them), readable text when it is; every
line logged while a job runs carries its job id, engine, task and tenant, the task's own lines included."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["auto", "json", "text"]

#: The fields a job adds to each log line made while it runs (in its worker thread).
JOB_FIELDS = ("job_id", "engine", "task", "tenant_id")
_current_job: ContextVar[dict[str, str] | None] = ContextVar("engineroom_job", default=None)


@contextlib.contextmanager
def job_log_context(job_id: str, engine: str, task: str, tenant_id: str) -> Iterator[None]:
    """Tag every log line made inside the block (by engineroom or by the task) with the job."""
    token = _current_job.set({"job_id": job_id, "engine": engine, "task": task, "tenant_id": tenant_id})
    try:
        yield
    finally:
        _current_job.reset(token)


class JobFieldsFilter(logging.Filter):
    """Copies the running job's fields onto each record (``None`` outside a job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = _current_job.get() or {}
        for name in JOB_FIELDS:
            setattr(record, name, job.get(name))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the job's fields when set, and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # a worker command forks processes that share one log
        }
        line.update({name: value for name in JOB_FIELDS if (value := getattr(record, name, None)) is not None})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """The usual text line, with ``[job=... engine=...]`` when a job runs."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        job_id = getattr(record, "job_id", None)
        if job_id is None:
            return text
        engine, tenant = getattr(record, "engine", None), getattr(record, "tenant_id", None)
        return f"{text} [job={job_id} engine={engine} tenant={tenant}]"


def formatter_for(log_format: LogFormat) -> logging.Formatter:
    use_json = log_format == "json" or (log_format == "auto" and not os.isatty(2))
    return JsonFormatter() if use_json else TextFormatter()


def configure_logging(log_format: LogFormat, level: int = logging.INFO) -> None:
    """Format the root logger's handlers (adding one on stderr if it has none), and quieten pika."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    root.setLevel(level)
    for handler in root.handlers:
        handler.setFormatter(formatter_for(log_format))
        handler.addFilter(JobFieldsFilter())
    logging.getLogger("pika").setLevel(logging.WARNING)
