"""One in-process gateway per fuzz module: hypothesis runs many examples per test, and starting a gateway for each
would cost more than the examples themselves."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from engineroom.core.config import Settings
from tests.conftest import TEST_JWT_SECRET
from tests.gateway import gateway_settings, in_process_gateway


@pytest.fixture(scope="module")
def fuzz_client(mongodb_url: str) -> Iterator[TestClient]:
    settings = Settings(mongodb_db=f"fuzz_{uuid.uuid4().hex[:12]}", jwt_secret=TEST_JWT_SECRET, namespace="fuzz.")  # type: ignore[arg-type]
    with in_process_gateway(gateway_settings(settings, mongodb_url)) as client:
        yield client
