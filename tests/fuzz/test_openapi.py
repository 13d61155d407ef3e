"""Schemathesis over the gateway's own OpenAPI: every operation, with generated parameters and bodies and a valid
token, answers without a 5xx and with a body its schema describes.

Examples are few per operation and derandomized, so a CI run is quick and the same every time; a failure prints a
``curl`` line that reproduces it.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from engineroom.api.app import create_app
from tests.conftest import make_token
from tests.settings import make_settings

#: Examples per operation: enough to hit each parameter's edges, few enough to keep the whole run under a minute.
EXAMPLES_PER_OPERATION = 5

#: The schema of the app the fixture runs (the routes do not depend on settings).
SCHEMA = schemathesis.openapi.from_dict(create_app(make_settings()).openapi())
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
    response_headers_conformance,
]


@pytest.fixture(scope="module")
def admin_token() -> str:
    return make_token("fuzzer", "fuzz", admin=True)


@SCHEMA.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_without_a_server_error_and_as_documented(
    case: Any, fuzz_client: TestClient, admin_token: str
) -> None:
    request = case.as_transport_kwargs(headers={"Authorization": f"Bearer {admin_token}"})
    request.pop("cookies", None)  # no operation reads cookies; httpx deprecates per-request ones
    if isinstance(request.get("data"), (bytes, str)):  # a raw body (a malformed one, say): httpx wants content=
        request["content"] = request.pop("data")
    response = fuzz_client.request(**request)
    case.validate_response(response, checks=CHECKS)
