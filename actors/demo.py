"""A ``<engine>.demo`` task for every engine: deterministic simulated work with progress and failure knobs. The
demos of the media engines also make a real file (``actors/media.py``) and save it as an artifact."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Literal

from pydantic import Field, JsonValue

from engineroom.actors.media import make_gif, make_png, make_wav
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


#: The engines whose demo also makes a file; the others run ``demo`` itself.
MEDIA_ENGINES = ("image_generation", "audio_generation", "video_pipeline")
Pixels = Annotated[int, Field(ge=1, le=2048)]
FailKind = Literal["transient", "permanent"] | None


@task("image_generation", name="demo", max_retries=3, timeout_s=600)
def image_demo(
    ctx: JobContext,
    duration_s: float = 0.5,
    steps: int = 5,
    fail: FailKind = None,
    result: JsonValue = None,
    fail_attempts: int = 0,
    tokens: int = 0,
    width: Pixels = 256,
    height: Pixels = 192,
    seed: int = 0,
) -> JsonValue:
    """``demo``, then save ``image.png``: ``width`` x ``height`` pixels of rings that ``seed`` shifts."""
    outcome = demo(ctx, duration_s, steps, fail, result, fail_attempts, tokens)
    ctx.save_artifact("image.png", make_png(width, height, seed))
    return outcome


@task("audio_generation", name="demo", max_retries=3, timeout_s=600)
def audio_demo(
    ctx: JobContext,
    duration_s: float = 0.5,
    steps: int = 5,
    fail: FailKind = None,
    result: JsonValue = None,
    fail_attempts: int = 0,
    tokens: int = 0,
    audio_s: Annotated[float, Field(gt=0, le=120)] = 2.0,
    frequency_hz: Annotated[float, Field(gt=0, le=10000)] = 440.0,
) -> JsonValue:
    """``demo``, then save ``speech.wav``: a tone of ``frequency_hz`` fading out over ``audio_s`` seconds."""
    outcome = demo(ctx, duration_s, steps, fail, result, fail_attempts, tokens)
    ctx.save_artifact("speech.wav", make_wav(audio_s, frequency_hz))
    return outcome


@task("video_pipeline", name="demo", max_retries=3, timeout_s=600)
def video_demo(
    ctx: JobContext,
    duration_s: float = 0.5,
    steps: int = 5,
    fail: FailKind = None,
    result: JsonValue = None,
    fail_attempts: int = 0,
    tokens: int = 0,
    width: Pixels = 160,
    height: Pixels = 120,
    frames: Annotated[int, Field(ge=1, le=300)] = 20,
) -> JsonValue:
    """``demo``, then save ``clip.gif``: ``frames`` frames (10 a second) of a disc crossing a gradient."""
    outcome = demo(ctx, duration_s, steps, fail, result, fail_attempts, tokens)
    ctx.save_artifact("clip.gif", make_gif(width, height, frames))
    return outcome


for _engine in ENGINES:
    if _engine not in MEDIA_ENGINES:
        task(_engine, name="demo", max_retries=3, timeout_s=600)(demo)


@task("general", name="echo_inputs", max_retries=0, timeout_s=60)
def echo_inputs(ctx: JobContext) -> JsonValue:
    """Return what the job's dependencies produced (``ctx.inputs``): to see data flow through a workflow."""
    return dict(ctx.inputs)
