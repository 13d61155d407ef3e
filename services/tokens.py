"""JWT bearer tokens: the one place that issues and checks them (REST and WebSocket alike)."""

from __future__ import annotations

from datetime import timedelta

import jwt

from engineroom.core.clock import utcnow
from engineroom.core.config import Settings
from engineroom.core.errors import Unauthenticated
from engineroom.models.principal import ADMIN_ROLE, Principal

#: Claims every token must carry; a token without them is refused, not defaulted.
REQUIRED_CLAIMS = ["sub", "tenant", "exp"]


def issue_token(settings: Settings, *, user_id: str, tenant_id: str, admin: bool = False, ttl_s: int = 86400) -> str:
    """A signed token for ``user_id`` in ``tenant_id``, valid for ``ttl_s`` seconds."""
    claims = {
        "sub": user_id,
        "tenant": tenant_id,
        "roles": [ADMIN_ROLE] if admin else [],
        "exp": utcnow() + timedelta(seconds=ttl_s),
    }
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=settings.jwt_algorithm)


def decode_token(settings: Settings, token: str) -> Principal:
    """The principal a token names.

    Raises:
      Unauthenticated: the token is malformed, forged, expired, unsigned (``alg=none``) or lacks a claim.
    """
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=[settings.jwt_algorithm],  # one algorithm only: never "none", never a confused one
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated(f"invalid token: {exc}") from None
    user_id, tenant_id, roles = claims.get("sub"), claims.get("tenant"), claims.get("roles", [])
    if not isinstance(user_id, str) or not user_id or not isinstance(tenant_id, str) or not tenant_id:
        raise Unauthenticated("invalid token: sub and tenant must be non-empty strings")
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise Unauthenticated("invalid token: roles must be a list of strings")
    return Principal(user_id=user_id, tenant_id=tenant_id, roles=tuple(roles))
