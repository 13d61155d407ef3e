"""Judging a failed attempt: transient (retry after a backoff) or permanent (fail now)."""

from __future__ import annotations

import traceback

from dramatiq.middleware import TimeLimitExceeded
from pydantic import ValidationError

from engineroom.core.errors import InvalidRequest, PermanentError
from engineroom.models.job import JobError
from engineroom.services.registry import Task

#: Failures no retry can cure: the task said so, or the input does not fit the task.
PERMANENT_BY_NATURE: tuple[type[BaseException], ...] = (PermanentError, ValidationError, InvalidRequest)


def is_transient(exc: BaseException, task: Task | None) -> bool:
    """The task's ``fail_on``, then its ``retry_on``, then the error's nature decide.

    ``TransientError``, timeouts and connection errors retry, and so does any other exception, as Dramatiq's
    ``Retries`` treats them all: provider SDKs raise all kinds of exceptions for passing trouble. A task that
    wants otherwise lists them in ``fail_on`` (or ``retry_on`` to retry, say, a ``ValidationError`` of a
    model's malformed output).
    """
    if task is not None and isinstance(exc, task.fail_on):
        return False
    if task is not None and isinstance(exc, task.retry_on):
        return True
    return not isinstance(exc, PERMANENT_BY_NATURE)


def describe_error(exc: BaseException, task: Task | None) -> JobError:
    """The stored form of an attempt's failure."""
    if isinstance(exc, TimeLimitExceeded):
        return JobError(type="Timeout", message="the job ran past its time limit", transient=True)
    return JobError(
        type=type(exc).__name__,
        message=str(exc) or type(exc).__name__,
        traceback="".join(traceback.format_exception(exc)),
        transient=is_transient(exc, task),
    )
