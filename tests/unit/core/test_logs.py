"""Log lines: JSON with the job's fields inside a job (the task's own lines too), nothing of it outside."""

from __future__ import annotations

import io
import json
import logging

from engineroom.core.logs import JobFieldsFilter, JsonFormatter, TextFormatter, job_log_context


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(JobFieldsFilter())
    logger = logging.getLogger(f"test.logs.{id(stream)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger, stream


def test_json_lines_carry_the_running_jobs_fields_and_tracebacks() -> None:
    logger, stream = capture(JsonFormatter())
    logger.info("before")
    with job_log_context("J1", "general", "general.demo", "acme"):
        logger.info("inside %s", "the task")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("it failed")
    logger.info("after")
    before, inside, failed, after = (json.loads(line) for line in stream.getvalue().splitlines())
    assert set(before) == {"ts", "level", "logger", "message", "pid"} and before["message"] == "before"
    assert inside["message"] == "inside the task"
    assert (inside["job_id"], inside["engine"], inside["task"], inside["tenant_id"]) == (
        "J1",
        "general",
        "general.demo",
        "acme",
    )
    assert failed["level"] == "ERROR" and "ValueError: boom" in failed["exc"] and failed["job_id"] == "J1"
    assert "job_id" not in after


def test_text_lines_name_the_job_at_the_end() -> None:
    logger, stream = capture(TextFormatter())
    with job_log_context("J2", "video_pipeline", "video_pipeline.demo", "acme"):
        logger.warning("slow")
    assert stream.getvalue().rstrip().endswith("slow [job=J2 engine=video_pipeline tenant=acme]")
