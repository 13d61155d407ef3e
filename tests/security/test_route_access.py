"""Every endpoint of the route table, tried without a token and with another user's and another tenant's token
against alice's resources: 401, 403 (admin-only) or 404 (someone else's), and never a byte of alice's data.

The endpoints come from ``app.routes`` (``tests/security/routes.py``): a new endpoint is tried here the moment it
exists, and one that needs a kind of id these fixtures do not make fails until someone adds it.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from engineroom.core.ids import new_id
from tests.security.conftest import Victim, bearer
from tests.security.routes import APP, ENDPOINTS, PROTECTED, PUBLIC_ROUTES, Endpoint, unclassified_routes

#: Bodies for endpoints that read one: valid enough that an ownership check, not validation, decides the answer.
BODIES = {
    ("POST", "/queues/{engine}/pause"): {"reason": "security test"},
    ("POST", "/workflows/{workflow_id}/steps"): {
        "steps": [{"id": "intruder", "task": "general.demo", "payload": {"duration_s": 0}}]
    },
}


def call(
    client: TestClient, endpoint: Endpoint, victim: Victim, headers: dict[str, str], ids: dict[str, str] | None = None
) -> tuple[int, str]:
    body = BODIES.get((endpoint.method, endpoint.path), {}) if endpoint.takes_body else None
    response = client.request(endpoint.method, endpoint.url(ids or victim.ids), json=body, headers=headers)
    return response.status_code, response.text


def as_if_absent(client: TestClient, endpoint: Endpoint, victim: Victim, headers: dict[str, str]) -> tuple[int, str]:
    """The answer for ids that exist nowhere, with the victim's ids put back in: what "not found" must look like."""
    absent = {name: new_id() if name != "engine" else value for name, value in victim.ids.items()}
    status, text = call(client, endpoint, victim, headers, absent)
    for name, value in absent.items():
        text = text.replace(value, victim.ids[name])
    return status, text


def test_every_route_is_an_http_route_the_static_mount_or_the_websocket() -> None:
    assert unclassified_routes(APP) == []


def test_only_the_allow_listed_routes_answer_without_a_token(gateway: TestClient, victim: Victim) -> None:
    answering = {
        (endpoint.method, endpoint.path) for endpoint in ENDPOINTS if call(gateway, endpoint, victim, {})[0] != 401
    }
    assert answering == PUBLIC_ROUTES
    assert gateway.get("/static/engineroom.js").status_code == 200


@pytest.mark.parametrize("endpoint", PROTECTED, ids=str)
def test_another_user_or_tenant_gets_403_or_404_and_none_of_the_victims_data(
    gateway: TestClient, victim: Victim, intruders: dict[str, str], endpoint: Endpoint
) -> None:
    names_a_resource = any(name != "engine" for name in endpoint.path_params)
    for who, token in intruders.items():
        status, text = call(gateway, endpoint, victim, bearer(token))
        assert status < 500, f"{endpoint} as {who}: {status} {text[:300]}"
        if endpoint.is_admin_only and "admin" not in who:
            assert status == 403, f"{endpoint} (admin only) as {who}: {status} {text[:300]}"
        elif names_a_resource:
            # Alice's resource reads exactly as one that does not exist (the id asked for may be echoed)
            assert status == 404, f"{endpoint} on alice's resource as {who}: {status} {text[:300]}"
            assert text == as_if_absent(gateway, endpoint, victim, bearer(token))[1]
        else:
            leaked = [secret for secret in victim.secrets if secret in text]
            assert not leaked, f"{endpoint} showed {who} alice's {leaked}: {text[:300]}"


def test_the_victims_resources_are_untouched_by_the_intruders(gateway: TestClient, victim: Victim) -> None:
    headers = bearer(victim.token)
    assert gateway.get(f"/jobs/{victim.ids['job_id']}", headers=headers).json()["state"] == "completed"
    image = gateway.get(f"/jobs/{victim.ids['job_id']}/artifacts/{victim.ids['name']}", headers=headers)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert gateway.get(f"/workflows/{victim.ids['workflow_id']}", headers=headers).json()["state"] == "completed"
    assert gateway.get(f"/schedules/{victim.ids['schedule_id']}", headers=headers).json()["paused"] is False
    unread = gateway.get("/notifications", params={"unread": "true"}, headers=headers).json()["items"]
    assert victim.ids["notification_id"] in [item["id"] for item in unread]
