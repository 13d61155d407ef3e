"""An in-process gateway and worker (StubBroker + in-process event bus) over a real SecantusDB."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from engineroom.core.config import Settings
from tests.gateway import gateway_settings, in_process_gateway


@pytest.fixture
def app_settings(settings: Settings, mongodb_url: str) -> Settings:
    return gateway_settings(settings, mongodb_url)


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    """A gateway (with the scheduler and notifier on its loop) whose jobs and notification deliveries run on two
    in-process worker threads."""
    with in_process_gateway(app_settings) as test_client:
        yield test_client
