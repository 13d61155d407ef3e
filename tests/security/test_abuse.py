"""Bodies meant to hurt, on every endpoint that reads one: each is answered with a clear 4xx (413, 400/422), and the
gateway keeps answering."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from engineroom.models.job import MAX_JSON_DEPTH
from tests.conftest import make_token
from tests.security.conftest import Victim, bearer
from tests.security.routes import PROTECTED, Endpoint

WITH_BODY = [endpoint for endpoint in PROTECTED if endpoint.takes_body]


def nested_arrays(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_there_are_endpoints_to_try() -> None:
    assert len(WITH_BODY) >= 5


@pytest.mark.parametrize("endpoint", WITH_BODY, ids=str)
def test_a_body_over_the_limit_gets_413_announced_or_streamed(
    gateway: TestClient, victim: Victim, endpoint: Endpoint
) -> None:
    limit = gateway.app.state.settings.max_payload_bytes  # type: ignore[attr-defined]
    body = b'{"payload": {"x": "' + b"x" * limit + b'"}}'
    headers = {**bearer(make_token(admin=True)), "Content-Type": "application/json"}
    url = endpoint.url(victim.ids)
    announced = gateway.request(endpoint.method, url, content=body, headers=headers)
    streamed = gateway.request(endpoint.method, url, content=iter([body[:1000], body[1000:]]), headers=headers)
    assert (announced.status_code, streamed.status_code) == (413, 413), streamed.text
    assert "exceeds" in announced.json()["detail"]


@pytest.mark.parametrize("endpoint", WITH_BODY, ids=str)
def test_deeply_nested_json_gets_a_4xx_and_the_gateway_stays_up(
    gateway: TestClient, victim: Victim, endpoint: Endpoint
) -> None:
    headers = {**bearer(make_token(admin=True)), "Content-Type": "application/json"}
    url = endpoint.url(victim.ids)
    for depth in (10_000, 900, MAX_JSON_DEPTH + 1):
        response = gateway.request(endpoint.method, url, content=nested_arrays(depth), headers=headers)
        assert 400 <= response.status_code < 500, f"depth {depth}: {response.status_code} {response.text[:200]}"
        # Inside an object: refused, or ignored by a body that ignores unknown fields (PUT /notifications/preferences)
        inside = f'{{"payload": {{"x": {nested_arrays(depth)}}}, "task": "general.demo"}}'
        response = gateway.request(endpoint.method, url, content=inside, headers=headers)
        assert response.status_code < 500, f"depth {depth}: {response.status_code} {response.text[:200]}"
    assert gateway.get("/healthz").status_code == 200


def test_a_payload_nested_past_the_limit_is_refused_naming_it(gateway: TestClient) -> None:
    headers = bearer(make_token())
    for depth, status in ((MAX_JSON_DEPTH, 202), (MAX_JSON_DEPTH + 1, 422)):
        payload = {"duration_s": 0, "result": nested_list(depth - 1)}  # the payload object is the first level
        response = gateway.post("/jobs", json={"task": "general.demo", "payload": payload}, headers=headers)
        assert response.status_code == status, response.text[:300]
    assert f"nests deeper than {MAX_JSON_DEPTH} levels" in response.text


def nested_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value
