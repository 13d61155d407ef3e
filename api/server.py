"""``engineroom api``: the gateway under uvicorn, stopped on SIGTERM or SIGINT within its grace period (open
requests finish, up to ``--grace-s``) plus ``EXIT_MARGIN_S`` for the lifespan's cleanup, whatever MongoDB does."""

from __future__ import annotations

import math
from types import FrameType

import uvicorn

from engineroom.core.shutdown import EXIT_MARGIN_S, ExitDeadline


class _Server(uvicorn.Server):
    """Uvicorn's server, arming the process's ``ExitDeadline`` when it is told to stop."""

    def __init__(self, config: uvicorn.Config, deadline: ExitDeadline, grace_s: float) -> None:
        super().__init__(config)
        self.deadline = deadline
        self.grace_s = grace_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        why = f"its {self.grace_s:g} s grace for open requests and the {EXIT_MARGIN_S:g} s margin ran out"
        self.deadline.arm(self.grace_s + EXIT_MARGIN_S, why)


def serve_api(host: str, port: int, grace_s: float) -> int:
    """Serve until told to stop; requests still open after ``grace_s`` are cancelled (uvicorn's
    ``timeout_graceful_shutdown``, whole seconds)."""
    graceful_s = math.ceil(grace_s)
    config = uvicorn.Config(
        "engineroom.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=graceful_s,
    )
    deadline = ExitDeadline()
    _Server(config, deadline, graceful_s).run()
    return deadline.finish(0)
