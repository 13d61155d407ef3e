"""A ``<engine>.demo`` task for every engine: deterministic simulated work with progress and failure knobs."""

from __future__ import annotations

import logging
import time
from typing import Literal

from pydantic import JsonValue

from engineroom.core.config import ENGINES
from engineroom.core.errors import PermanentError, TransientError
from engineroom.services.context import JobContext
from engineroom.services.registry import task

logger = logging.getLogger(__name__)


def demo(
    ctx: JobContext,
    duration_s: float = 0.5,
    steps: int = 5,
    fail: Literal["transient", "permanent"] | None = None,
    result: JsonValue = None,
    fail_attempts: int = 0,
    tokens: int = 0,
) -> JsonValue:
    """Sleep ``duration_s`` in ``steps`` steps reporting progress, then return ``result`` or fail as asked:
    always (``fail``), or transiently on the first ``fail_attempts`` attempts (to watch retries work). ``tokens``
    records usage as an AI call would: that many tokens in, half as many out, $0.002 per thousand in all."""
    if duration_s < 0 or steps < 1:
        raise PermanentError("duration_s must be >= 0 and steps >= 1")
    step_s = duration_s / steps
    if tokens:
        ctx.record_usage(tokens_in=tokens, tokens_out=tokens // 2, cost_usd=(tokens + tokens // 2) * 0.000002)
    logger.info("demo: %d step(s) over %.2f s", steps, duration_s)  # a task's own line, tagged with its job
    for step in range(1, steps + 1):
        time.sleep(step_s)
        ctx.raise_if_cancelled()
        ctx.progress(100 * step / steps, f"step {step}/{steps}", step=step)
    if ctx.job.attempts <= fail_attempts:
        raise TransientError(f"demo transient failure on attempt {ctx.job.attempts} of the first {fail_attempts}")
    if fail == "transient":
        raise TransientError("demo transient failure")
    if fail == "permanent":
        raise PermanentError("demo permanent failure")
    return {"engine": ctx.job.engine, "steps": steps, "result": result}


for _engine in ENGINES:
    task(_engine, name="demo", max_retries=3, timeout_s=600)(demo)


@task("general", name="echo_inputs", max_retries=0, timeout_s=60)
def echo_inputs(ctx: JobContext) -> JsonValue:
    """Return what the job's dependencies produced (``ctx.inputs``): to see data flow through a workflow."""
    return dict(ctx.inputs)
