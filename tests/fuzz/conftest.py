"""One in-process gateway per fuzz module: hypothesis runs many examples per test, and starting a gateway for each
would cost more than the examples themselves."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.gateway import in_process_gateway, own_database_settings


@pytest.fixture(scope="module")
def fuzz_client(mongodb_url: str) -> Iterator[TestClient]:
    with in_process_gateway(own_database_settings("fuzz", mongodb_url)) as client:
        yield client
