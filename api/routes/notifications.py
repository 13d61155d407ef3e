"""``/notifications``: your inbox, marking it read, and which channels notify you of what."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from engineroom.api.deps import NotificationStoreDep, PreferenceCacheDep, PreferenceStoreDep, PrincipalDep
from engineroom.core.ids import ID_LENGTH
from engineroom.models.notification import (
    NotificationPage,
    NotificationPreferencesPublic,
    NotificationPreferencesUpdate,
    NotificationPublic,
    PreferencesDocument,
    ReadAllResult,
)

router = APIRouter(prefix="/notifications", tags=["notifications"])

NotificationId = Annotated[str, Path(min_length=ID_LENGTH, max_length=ID_LENGTH, pattern="^[0-9A-Z]+$")]


def _public(preferences: PreferencesDocument) -> NotificationPreferencesPublic:
    return NotificationPreferencesPublic.model_validate(preferences.model_dump(exclude={"tenant_id", "user_id"}))


@router.get("", response_model=NotificationPage)
async def list_notifications(
    notifications: NotificationStoreDep,
    who: PrincipalDep,
    unread: bool = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(min_length=ID_LENGTH, max_length=ID_LENGTH, pattern="^[0-9A-Z]+$")] = None,
) -> NotificationPage:
    """List your notifications (only the unread ones with `unread=true`), newest first, with their deliveries."""
    return await notifications.list_own(who, unread=unread, limit=limit, cursor=cursor)


@router.post("/read-all", response_model=ReadAllResult)
async def read_all_notifications(notifications: NotificationStoreDep, who: PrincipalDep) -> ReadAllResult:
    """Mark every notification of yours read."""
    return ReadAllResult(marked=await notifications.mark_all_read(who))


@router.get("/preferences", response_model=NotificationPreferencesPublic)
async def get_preferences(preferences: PreferenceStoreDep, who: PrincipalDep) -> NotificationPreferencesPublic:
    """Your channels and the events each wants, with the secret your webhooks are signed with."""
    return _public(await preferences.get_or_create(who.tenant_id, who.user_id))


@router.put("/preferences", response_model=NotificationPreferencesPublic)
async def put_preferences(
    body: NotificationPreferencesUpdate, preferences: PreferenceStoreDep, cache: PreferenceCacheDep, who: PrincipalDep
) -> NotificationPreferencesPublic:
    """Replace your preferences (the webhook secret is the server's and stays)."""
    stored = await preferences.put(who.tenant_id, who.user_id, body)
    cache.forget(who.tenant_id, who.user_id)  # a notifier in this process sees it at once; others within their expiry
    return _public(stored)


@router.post("/{notification_id}/read", response_model=NotificationPublic)
async def read_notification(
    notification_id: NotificationId, notifications: NotificationStoreDep, who: PrincipalDep
) -> NotificationPublic:
    """Mark one notification of yours read."""
    return NotificationPublic.from_document(await notifications.mark_read(notification_id, who))
