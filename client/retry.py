"""Bounded retries with exponential backoff for 503s and connection errors, decided without doing I/O so the
sync and async clients share them."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

from engineroom.client.errors import ApiUnreachable
from engineroom.core.backoff import compute_backoff_s

logger = logging.getLogger(__name__)

#: Errors raised before the request left: resending cannot run anything twice.
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a call is tried: ``max_attempts`` in all, full-jitter backoff between them."""

    max_attempts: int = 4
    base_s: float = 0.25
    cap_s: float = 4.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def plan(self, description: str, *, idempotent: bool) -> RetryPlan:
        return RetryPlan(self, description, idempotent)


class RetryPlan:
    """One call's attempts. After each failure it answers how long to sleep before the next, or raises.

    A request that may have reached the server (a read timeout, a reset mid-answer) is resent only when sending
    it twice is harmless (``idempotent``): a second ``POST /jobs`` without an idempotency key would be a second job.
    """

    def __init__(self, policy: RetryPolicy, description: str, idempotent: bool) -> None:
        self.policy = policy
        self.description = description
        self.idempotent = idempotent
        self.failures = 0

    def delay_after_error(self, exc: httpx.TransportError) -> float:
        """Seconds to wait before trying again after a transport error.

        Raises:
          ApiUnreachable: no attempt left, or the request may have been processed and is not safe to resend.
        """
        if not (self.idempotent or isinstance(exc, NOT_SENT_ERRORS)) or not self._has_attempt_left():
            raise ApiUnreachable(f"{self.description}: {type(exc).__name__}: {exc}") from exc
        return self._next_delay(f"{type(exc).__name__}: {exc}")

    def delay_after_response(self, response: httpx.Response) -> float | None:
        """Seconds to wait before trying again, or ``None`` when this response is the answer (errors included)."""
        if response.status_code != 503 or not self._has_attempt_left():
            return None
        return self._next_delay("503 Service Unavailable")

    def _has_attempt_left(self) -> bool:
        return self.failures + 1 < self.policy.max_attempts

    def _next_delay(self, reason: str) -> float:
        delay_s = compute_backoff_s(self.failures, base_s=self.policy.base_s, cap_s=self.policy.cap_s)
        self.failures += 1
        logger.warning("%s failed (%s); attempt %s in %.2f s", self.description, reason, self.failures + 1, delay_s)
        return delay_s
