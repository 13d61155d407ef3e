"""``GET /usage``: the usage tasks record, added up per engine, user, task or job, for whoever may see it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from tests.unit.api.test_jobs import TokenFor, auth, wait_for_state


def run(client: TestClient, token: str, task: str, tokens: int) -> str:
    body = {"task": task, "payload": {"duration_s": 0, "steps": 1, "tokens": tokens}}
    job_id: str = client.post("/jobs", json=body, headers=auth(token)).json()["id"]
    wait_for_state(client, job_id, token, {"completed"})
    return job_id


def test_usage_adds_up_per_engine_user_and_job_within_what_the_caller_may_see(
    client: TestClient, token_for: TokenFor
) -> None:
    alice, bob, admin = token_for("alice", "acme"), token_for("bob", "acme"), token_for("root", "acme", admin=True)
    big = run(client, alice, "text_intelligence.demo", 1000)
    run(client, alice, "general.demo", 10)
    run(client, bob, "text_intelligence.demo", 100)
    run(client, token_for("eve", "other"), "text_intelligence.demo", 5000)

    mine = client.get("/usage", headers=auth(alice)).json()
    assert [(row["key"], row["jobs"], row["tokens_in"], row["tokens_out"]) for row in mine["rows"]] == [
        ("text_intelligence", 1, 1000, 500),
        ("general", 1, 10, 5),
    ]
    assert mine["total"]["tokens_in"] == 1010 and round(mine["total"]["cost_usd"], 6) == round(1515 * 0.000002, 6)

    by_user = client.get("/usage", params={"group_by": "user"}, headers=auth(admin)).json()
    assert [(row["key"], row["tokens_in"]) for row in by_user["rows"]] == [("alice", 1010), ("bob", 100)]
    by_job = client.get("/usage", params={"group_by": "job"}, headers=auth(alice)).json()
    assert by_job["rows"][0]["key"] == big

    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert client.get("/usage", params={"since": later, "until": later + "x"}, headers=auth(alice)).status_code == 422
    empty = client.get("/usage", params={"since": later}, headers=auth(alice))
    assert empty.status_code == 422  # since after the default until (now)
    future = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    assert client.get("/usage", params={"since": later, "until": future}, headers=auth(alice)).json()["rows"] == []
    assert client.get("/usage", params={"group_by": "galaxy"}, headers=auth(alice)).status_code == 422
