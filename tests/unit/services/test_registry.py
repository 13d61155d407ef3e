"""The task registry refuses bad declarations at import and bad payloads at submit."""

from __future__ import annotations

import pytest

from engineroom.core.config import ENGINES
from engineroom.core.errors import InvalidRequest
from engineroom.services.context import JobContext
from engineroom.services.registry import all_tasks, get_task, load_task_modules, task


def test_every_engine_ships_a_demo_task() -> None:
    load_task_modules()
    names = {registered.full_name for registered in all_tasks()}
    assert {f"{engine}.demo" for engine in ENGINES} <= names


def test_a_task_on_an_unknown_engine_is_refused_at_declaration() -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        task("quantum_computing")


def test_a_second_task_with_the_same_name_is_refused() -> None:
    def first(ctx: JobContext) -> None: ...

    def second(ctx: JobContext) -> None: ...

    task("general", name="registry_duplicate")(first)
    with pytest.raises(ValueError, match="already registered"):
        task("general", name="registry_duplicate")(second)


def test_async_tasks_are_refused_until_supported() -> None:
    async def coroutine_task(ctx: JobContext) -> None: ...

    with pytest.raises(TypeError, match="async"):
        task("general", name="registry_async")(coroutine_task)


def test_negative_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        task("general", max_retries=-1)
    with pytest.raises(ValueError):
        task("general", timeout_s=0)


def test_unknown_task_names_say_where_to_look() -> None:
    with pytest.raises(InvalidRequest, match="GET /tasks"):
        get_task("general.nope")


def test_payloads_are_checked_against_the_signature_with_every_problem_named() -> None:
    load_task_modules()
    demo = get_task("general.demo")
    assert demo.validate_payload({"duration_s": 0, "steps": 2}) == {
        "duration_s": 0,
        "steps": 2,
        "fail": None,
        "result": None,
        "fail_attempts": 0,
        "tokens": 0,
    }
    with pytest.raises(InvalidRequest) as caught:
        demo.validate_payload({"steps": "many", "colour": "red"})
    assert "steps" in caught.value.detail and "colour" in caught.value.detail


def test_the_payload_schema_lists_the_task_parameters() -> None:
    load_task_modules()
    schema = get_task("general.demo").info().payload_schema
    assert set(schema["properties"]) == {"duration_s", "steps", "fail", "result", "fail_attempts", "tokens"}
    assert schema["additionalProperties"] is False
    video = get_task("video_pipeline.demo").info().payload_schema  # the demo's knobs, and what its clip looks like
    assert set(video["properties"]) == {*schema["properties"], "width", "height", "frames"}
