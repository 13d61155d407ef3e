"""Submit rate limits per user and per tenant (429 with ``Retry-After``), counted in fixed windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engineroom.core.clock import utcnow
from engineroom.core.errors import RateLimited
from engineroom.models.principal import Principal
from engineroom.store.rate_limits import RateCounters


class SubmitRateLimiter:
    """Charges each submit (a batch or workflow: one per job) to its user and tenant.

    Fixed windows of ``window_s`` (60 s for "per minute"): one counter write per limit per submit, and a client
    told to wait ``Retry-After`` seconds finds a fresh window when it comes back.
    """

    def __init__(
        self, counters: RateCounters, *, per_user: int | None, per_tenant: int | None, window_s: float
    ) -> None:
        self.counters = counters
        self.limits = {"user": per_user, "tenant": per_tenant}
        self.window_s = window_s

    async def charge(self, who: Principal, jobs: int = 1) -> None:
        """Count ``jobs`` submits.

        Raises:
          RateLimited: the user or the tenant went over its limit in this window.
          StoreUnavailable: MongoDB failed.
        """
        now = utcnow()
        start = _window_start(now, self.window_s)
        end = start + timedelta(seconds=self.window_s)
        keys = {"user": f"user:{who.tenant_id}:{who.user_id}", "tenant": f"tenant:{who.tenant_id}"}
        for scope, limit in self.limits.items():
            if limit is None:
                continue
            count = await self.counters.add(keys[scope], jobs, window_start=start, expires_at=end)
            if count > limit:
                raise RateLimited(
                    (end - now).total_seconds(),
                    f"{scope} submit limit of {limit} jobs per {self.window_s:g} s reached; retry after the window",
                )


def _window_start(now: datetime, window_s: float) -> datetime:
    epoch_s = now.timestamp()
    return datetime.fromtimestamp(epoch_s - epoch_s % window_s, tz=UTC)
