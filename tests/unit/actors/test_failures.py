"""Which failures retry: the task's lists first, then the error's nature."""

from __future__ import annotations

import pytest
from dramatiq.middleware import TimeLimitExceeded
from pydantic import BaseModel, ValidationError

from engineroom.actors.failures import describe_error, is_transient
from engineroom.core.errors import InvalidRequest, PermanentError, TransientError
from engineroom.services.context import InvalidProgress, JobContext
from engineroom.services.registry import Task, get_task, task


class _Model(BaseModel):
    n: int


def _validation_error() -> ValidationError:
    try:
        _Model.model_validate({"n": "x"})
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


def picky(ctx: JobContext) -> None: ...


@pytest.fixture(scope="module")
def picky_task() -> Task:
    task("general", name="failures_picky", retry_on=[ValidationError], fail_on=[KeyError, TransientError])(picky)
    return get_task("general.failures_picky")


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (TransientError("x"), True),
        (TimeLimitExceeded(), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (RuntimeError("sdk hiccup"), True),
        (PermanentError("x"), False),
        (InvalidRequest("bad payload"), False),
        (InvalidProgress("percent"), False),
        (_validation_error(), False),
    ],
)
def test_errors_are_judged_by_nature_when_the_task_says_nothing(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc, None) is transient


def test_the_tasks_lists_override_the_nature_of_an_error(picky_task: Task) -> None:
    assert is_transient(_validation_error(), picky_task) is True
    assert is_transient(KeyError("k"), picky_task) is False
    assert is_transient(TransientError("x"), picky_task) is False  # fail_on wins


def test_a_timeout_is_stored_as_a_transient_timeout() -> None:
    error = describe_error(TimeLimitExceeded(), None)
    assert (error.type, error.transient) == ("Timeout", True)


def test_an_error_keeps_its_type_message_and_traceback() -> None:
    try:
        raise PermanentError("refused content")
    except PermanentError as exc:
        error = describe_error(exc, None)
    assert (error.type, error.message, error.transient) == ("PermanentError", "refused content", False)
    assert error.traceback is not None and "refused content" in error.traceback
