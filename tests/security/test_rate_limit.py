"""Submit floods on every endpoint that charges the rate limiter (found in the route table): 429 with
``Retry-After``. A module of its own: its gateway has a limit, and only one in-process gateway runs at a time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_token
from tests.gateway import in_process_gateway, own_database_settings
from tests.security.conftest import bearer
from tests.security.routes import PROTECTED, Endpoint

RATE_LIMITED = [endpoint for endpoint in PROTECTED if endpoint.is_rate_limited]
#: Submits per user per window.
SUBMIT_LIMIT = 2
#: A valid body for each endpoint that charges the rate limiter; a new one fails the test until it has one here.
VALID_SUBMITS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/jobs"): {"task": "general.demo", "payload": {"duration_s": 0}},
    ("POST", "/jobs/batch"): {"jobs": [{"task": "general.demo", "payload": {"duration_s": 0}}]},
    ("POST", "/workflows"): {"steps": [{"id": "a", "task": "general.demo", "payload": {"duration_s": 0}}]},
    ("POST", "/workflows/{workflow_id}/steps"): {
        "steps": [{"id": "extra0", "task": "general.demo", "payload": {"duration_s": 0}}]
    },
}


def path_ids(client: TestClient, headers: dict[str, str], endpoint: Endpoint) -> tuple[dict[str, str], int]:
    """Ids for the endpoint's path, made by the flooder itself (so answers are not 404), and the submits that took.

    A long-running one-step workflow is one charge; each append to it must use a new step id, so the body is
    rewritten per call below.
    """
    if "workflow_id" not in endpoint.path_params:
        return {}, 0
    steps = [{"id": "slow", "task": "general.demo", "payload": {"duration_s": 30, "steps": 300}}]
    created = client.post("/workflows", json={"steps": steps}, headers=headers)
    assert created.status_code < 300, created.text
    return {"workflow_id": created.json()["id"]}, 1


def test_the_submit_endpoints_are_found() -> None:
    assert {(endpoint.method, endpoint.path) for endpoint in RATE_LIMITED} >= set(VALID_SUBMITS)


@pytest.fixture(scope="module")
def limited(mongodb_url: str) -> Iterator[TestClient]:
    settings = own_database_settings("ratelimit", mongodb_url, rate_limit_per_minute=SUBMIT_LIMIT, rate_window_s=60.0)
    with in_process_gateway(settings) as client:
        yield client


@pytest.mark.parametrize("endpoint", RATE_LIMITED, ids=str)
def test_every_submit_endpoint_answers_429_with_retry_after_past_the_limit(
    limited: TestClient, endpoint: Endpoint
) -> None:
    body = VALID_SUBMITS.get((endpoint.method, endpoint.path))
    assert body is not None, f"{endpoint} charges the rate limiter: add a valid body to VALID_SUBMITS"
    headers = bearer(make_token(f"flooder-{endpoint.method}-{endpoint.path}", "flood"))
    ids, used = path_ids(limited, headers, endpoint)
    # One more than twice the limit: even if a window starts during the loop, one window sees too many
    statuses = [
        limited.request(endpoint.method, endpoint.url(ids), json=_fresh(body, n), headers=headers)
        for n in range(2 * SUBMIT_LIMIT + 1)
    ]
    refused = [response for response in statuses if response.status_code == 429]
    assert refused, [response.status_code for response in statuses]
    assert all(response.status_code < 300 for response in statuses[: SUBMIT_LIMIT - used]), statuses
    retry_after = int(refused[0].headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert "limit" in refused[0].json()["detail"]
    if "workflow_id" in ids:  # its 30 s step would otherwise hold the gateway's worker at the module's end
        assert limited.post(f"/workflows/{ids['workflow_id']}/cancel", headers=headers).status_code == 200


def _fresh(body: dict[str, Any], n: int) -> dict[str, Any]:
    """Appended steps need ids the workflow does not have yet."""
    if "steps" not in body or not str(body["steps"][0]["id"]).startswith("extra"):
        return body
    return {"steps": [{**step, "id": f"extra{n}"} for step in body["steps"]]}
