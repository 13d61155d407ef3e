"""Who may see what: the one query fragment every owned collection (jobs, workflows, schedules) filters by."""

from __future__ import annotations

from typing import Any

from engineroom.models.principal import Principal


def visible_to(who: Principal) -> dict[str, Any]:
    """Users see their own documents; admins see their tenant's. Nobody sees another tenant's."""
    if who.is_admin:
        return {"tenant_id": who.tenant_id}
    return {"tenant_id": who.tenant_id, "user_id": who.user_id}
