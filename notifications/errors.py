"""Why an email or webhook delivery attempt failed, and whether another attempt may succeed."""

from __future__ import annotations

from engineroom.core.errors import EngineroomError


class DeliveryError(EngineroomError):
    """An attempt failed in a way a later attempt may not (a 5xx, a timeout, a refused connection)."""

    detail = "delivery failed"

    def __init__(self, detail: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(detail)


class DeliveryRefused(DeliveryError):
    """An attempt failed in a way no retry will cure (a 4xx answer, no address, SMTP not configured)."""
