"""Where the API is, who the client is, and how long and how often it tries: shared by both clients."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode

from engineroom.client.retry import RetryPolicy

#: The gateway ``engineroom dev`` and ``engineroom api`` listen on by default.
DEFAULT_URL = "http://127.0.0.1:8000"
#: Seconds one HTTP request (or WebSocket handshake) may take, unless the client is given another.
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ClientConfig:
    """Everything a client needs besides its connections; ``from_env`` reads ``ENGINEROOM_URL`` and
    ``ENGINEROOM_TOKEN``."""

    base_url: str = DEFAULT_URL
    token: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, not {self.base_url!r}")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))

    @classmethod
    def from_env(
        cls,
        base_url: str | None = None,
        token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
    ) -> ClientConfig:
        """Arguments first, then ``ENGINEROOM_URL`` / ``ENGINEROOM_TOKEN``, then the local default."""
        return cls(
            base_url=base_url or os.environ.get("ENGINEROOM_URL") or DEFAULT_URL,
            token=token or os.environ.get("ENGINEROOM_TOKEN") or None,
            timeout_s=timeout_s,
            retry=retry or RetryPolicy(),
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def ws_url(self, topics: Sequence[str] = (), after: str | None = None) -> str:
        """``/ws`` with the token, the topics and the resume point in the URL, as the gateway wants a reconnecting
        client to give them (the replay then precedes every live event)."""
        query: dict[str, str] = {}
        if self.token:
            query["token"] = self.token
        if topics:
            query["topics"] = ",".join(topics)
        if after:
            query["after"] = after
        scheme_less = self.base_url.removeprefix("http")  # "://host" or "s://host"
        return f"ws{scheme_less}/ws" + (f"?{urlencode(query)}" if query else "")
