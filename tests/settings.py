"""The one way tests build ``Settings`` in process, so each signs and checks tokens with the same test secret."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from engineroom.core.config import Settings

#: Same secret for in-process apps and the processes e2e tests start.
TEST_JWT_SECRET = "engineroom-test-secret-0123456789abcdef"


def make_settings(*, jwt_secret: str = TEST_JWT_SECRET, **overrides: Any) -> Settings:
    """Settings signed with the test secret (or ``jwt_secret``), with ``overrides``; the rest come from the
    environment and the defaults, as for any process.

    Raises:
      TypeError: an override names no setting (``Settings`` would ignore it silently).
    """
    unknown = sorted(set(overrides) - set(Settings.model_fields))
    if unknown:
        raise TypeError(f"no such setting: {', '.join(unknown)}")
    return Settings(jwt_secret=SecretStr(jwt_secret), **overrides)
