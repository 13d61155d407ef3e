"""One error hierarchy for the whole product; ``api/errors.py`` is the only place that maps it to HTTP."""

from __future__ import annotations

from dramatiq.middleware import Interrupt


class EngineroomError(Exception):
    """Root of every error engineroom raises on purpose."""

    #: HTTP status the gateway answers with.
    status_code: int = 500
    #: Safe to show to the caller.
    detail: str = "internal error"

    def __init__(self, detail: str | None = None) -> None:
        if detail is not None:
            self.detail = detail
        super().__init__(self.detail)


class Unauthenticated(EngineroomError):
    status_code = 401
    detail = "missing or invalid token"


class Forbidden(EngineroomError):
    status_code = 403
    detail = "not allowed"


class NotFound(EngineroomError):
    """Absent, or belongs to someone else: the two are never told apart."""

    status_code = 404
    detail = "not found"


class Conflict(EngineroomError):
    status_code = 409
    detail = "conflict"


class InvalidTransition(Conflict):
    """The document was not in a state the transition may start from."""

    detail = "the job is not in a state that allows this"


class PayloadTooLarge(EngineroomError):
    status_code = 413
    detail = "request body too large"


class RangeNotSatisfiable(EngineroomError):
    """A ``Range`` that starts past the end of the file."""

    status_code = 416
    detail = "the requested range is not within the file"

    def __init__(self, size_bytes: int, detail: str | None = None) -> None:
        self.size_bytes = size_bytes
        super().__init__(detail)


class InvalidRequest(EngineroomError):
    status_code = 422
    detail = "invalid request"


class RateLimited(EngineroomError):
    status_code = 429
    detail = "too many requests"

    def __init__(self, retry_after_s: float, detail: str | None = None) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(detail)


class ServiceUnavailable(EngineroomError):
    """Something the gateway needs is down; worth trying again shortly (the Python client does, bounded)."""

    status_code = 503
    detail = "service unavailable"


class StoreUnavailable(ServiceUnavailable):
    detail = "the job store (MongoDB) is unreachable"


class BrokerUnavailable(ServiceUnavailable):
    detail = "the message broker (RabbitMQ) is unreachable"


class TaskError(Exception):
    """Raised by task code to say how its failure should be treated."""

    #: Whether another attempt may succeed.
    transient: bool = False


class TransientError(TaskError):
    """A failure another attempt may cure (provider timeout, rate limit, connection reset)."""

    transient = True


class PermanentError(TaskError):
    """A failure no retry will cure (bad input, refused content)."""

    transient = False


class JobCancelled(Interrupt):
    """Raised into a running task's thread when its job is cancelled.

    An ``Interrupt`` (a ``BaseException``) so ``except Exception`` in task code cannot swallow it.
    """
