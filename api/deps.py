"""FastAPI dependencies: read what the lifespan built from ``app.state``, and who is calling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from engineroom.api.queues import QueueControl
from engineroom.api.rate_limits import SubmitRateLimiter
from engineroom.api.status import PipelineReport
from engineroom.artifacts.base import ArtifactStore
from engineroom.core.config import Settings
from engineroom.core.errors import Forbidden, Unauthenticated
from engineroom.models.principal import Principal
from engineroom.notifications.preference_cache import PreferenceCache
from engineroom.services.control import JobControl
from engineroom.services.schedules import ScheduleControl
from engineroom.services.submission import JobSubmitter
from engineroom.services.tokens import decode_token
from engineroom.services.workflows import WorkflowService
from engineroom.store.jobs import JobStore
from engineroom.store.notifications import NotificationStore
from engineroom.store.preferences import PreferenceStore
from engineroom.store.schedules import ScheduleStore
from engineroom.store.stats import UsageTotals

T = TypeVar("T")

_bearer = HTTPBearer(auto_error=False, description="A JWT from `engineroom token`")


def from_state(name: str, kind: type[T]) -> Callable[[Request], T]:
    """A dependency that hands out what the lifespan put on ``app.state.<name>``; tests override it through
    ``app.dependency_overrides`` like any other."""

    def get(request: Request) -> T:
        value = getattr(request.app.state, name)
        if not isinstance(value, kind):
            raise TypeError(f"app.state.{name} is a {type(value).__name__}, not a {kind.__name__}")
        return value

    get.__name__ = f"get_{name}"
    return get


SettingsDep = Annotated[Settings, Depends(from_state("settings", Settings))]


def get_principal(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None:
        raise Unauthenticated("missing bearer token")
    return decode_token(settings, credentials.credentials)


JobStoreDep = Annotated[JobStore, Depends(from_state("jobs", JobStore))]
ArtifactStoreDep = Annotated[ArtifactStore, Depends(from_state("artifacts", ArtifactStore))]
RateLimiterDep = Annotated[SubmitRateLimiter, Depends(from_state("rate_limiter", SubmitRateLimiter))]
PipelineReportDep = Annotated[PipelineReport, Depends(from_state("pipeline_report", PipelineReport))]
UsageTotalsDep = Annotated[UsageTotals, Depends(from_state("usage_totals", UsageTotals))]
SubmitterDep = Annotated[JobSubmitter, Depends(from_state("submitter", JobSubmitter))]
JobControlDep = Annotated[JobControl, Depends(from_state("control", JobControl))]
QueueControlDep = Annotated[QueueControl, Depends(from_state("queue_control", QueueControl))]
WorkflowServiceDep = Annotated[WorkflowService, Depends(from_state("workflows", WorkflowService))]
ScheduleStoreDep = Annotated[ScheduleStore, Depends(from_state("schedules", ScheduleStore))]
ScheduleControlDep = Annotated[ScheduleControl, Depends(from_state("schedule_control", ScheduleControl))]
NotificationStoreDep = Annotated[NotificationStore, Depends(from_state("notifications", NotificationStore))]
PreferenceStoreDep = Annotated[PreferenceStore, Depends(from_state("preferences", PreferenceStore))]
PreferenceCacheDep = Annotated[PreferenceCache, Depends(from_state("preference_cache", PreferenceCache))]


BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def require_admin(who: PrincipalDep) -> Principal:
    """Guards operator routes: a valid token without the admin role gets 403."""
    if not who.is_admin:
        raise Forbidden("this needs the admin role")
    return who


PrincipalDep = Annotated[Principal, Depends(get_principal)]
