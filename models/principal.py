"""Who is calling: decoded from a JWT by the gateway."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

ADMIN_ROLE = "admin"


class Principal(BaseModel):
    """An authenticated user of one tenant."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    tenant_id: str
    roles: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles
