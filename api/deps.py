"""FastAPI dependencies: read what the lifespan built from ``app.state``, and who is calling."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from engineroom.api.control import JobControl
from engineroom.api.queues import QueueControl
from engineroom.api.schedules import ScheduleControl
from engineroom.api.submission import JobSubmitter
from engineroom.api.workflows import WorkflowService
from engineroom.core.config import Settings
from engineroom.core.errors import Forbidden, Unauthenticated
from engineroom.core.tokens import decode_token
from engineroom.models.principal import Principal
from engineroom.store.jobs import JobStore
from engineroom.store.schedules import ScheduleStore

_bearer = HTTPBearer(auto_error=False, description="A JWT from `engineroom token`")


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_job_store(request: Request) -> JobStore:
    jobs: JobStore = request.app.state.jobs
    return jobs


def get_submitter(request: Request) -> JobSubmitter:
    submitter: JobSubmitter = request.app.state.submitter
    return submitter


def get_job_control(request: Request) -> JobControl:
    control: JobControl = request.app.state.control
    return control


def get_queue_control(request: Request) -> QueueControl:
    control: QueueControl = request.app.state.queue_control
    return control


def get_workflow_service(request: Request) -> WorkflowService:
    service: WorkflowService = request.app.state.workflows
    return service


def get_schedule_store(request: Request) -> ScheduleStore:
    schedules: ScheduleStore = request.app.state.schedules
    return schedules


def get_schedule_control(request: Request) -> ScheduleControl:
    control: ScheduleControl = request.app.state.schedule_control
    return control


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_principal(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None:
        raise Unauthenticated("missing bearer token")
    return decode_token(settings, credentials.credentials)


JobStoreDep = Annotated[JobStore, Depends(get_job_store)]
SubmitterDep = Annotated[JobSubmitter, Depends(get_submitter)]
JobControlDep = Annotated[JobControl, Depends(get_job_control)]
QueueControlDep = Annotated[QueueControl, Depends(get_queue_control)]
WorkflowServiceDep = Annotated[WorkflowService, Depends(get_workflow_service)]
ScheduleStoreDep = Annotated[ScheduleStore, Depends(get_schedule_store)]
ScheduleControlDep = Annotated[ScheduleControl, Depends(get_schedule_control)]


def require_admin(who: PrincipalDep) -> Principal:
    """Guards operator routes: a valid token without the admin role gets 403."""
    if not who.is_admin:
        raise Forbidden("this needs the admin role")
    return who


PrincipalDep = Annotated[Principal, Depends(get_principal)]
