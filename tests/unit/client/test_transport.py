"""The client's retries, error mapping and URLs, against ``httpx.MockTransport`` (no server)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from engineroom.client.calls import get_job, submit
from engineroom.client.config import ClientConfig
from engineroom.client.errors import ApiUnreachable, UnexpectedStatus, error_for
from engineroom.client.events import _SeenIds
from engineroom.client.retry import RetryPolicy
from engineroom.client.sync_client import Client
from engineroom.core.errors import InvalidRequest, NotFound, RateLimited, ServiceUnavailable
from engineroom.models.job import JobSubmit

FAST = RetryPolicy(max_attempts=3, base_s=0.0, cap_s=0.0)
JOB = {"id": "J" * 26, "tenant_id": "t", "user_id": "u", "engine": "general", "task": "general.demo"}
JOB |= {"state": "queued", "created_at": "2026-01-01T00:00:00Z"}


def client_answering(
    *answers: httpx.Response | Exception, base_url: str = "http://api.test"
) -> tuple[Client, list[httpx.Request]]:
    """A client whose transport gives ``answers`` in turn (an exception is raised instead of answered); its
    WebSocket, which the transport cannot answer, goes to ``base_url`` for real."""
    sent: list[httpx.Request] = []
    pending = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        answer = pending.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = Client(config=ClientConfig(base_url, "tok", retry=FAST))
    client._http = httpx.Client(base_url=base_url, transport=httpx.MockTransport(handle))
    return client, sent


def test_a_503_is_retried_and_the_next_answer_returned() -> None:
    client, sent = client_answering(httpx.Response(503, json={"detail": "down"}), httpx.Response(200, json=JOB))
    assert client.get("J" * 26).state == "queued"
    assert len(sent) == 2


def test_retries_are_bounded_and_end_in_the_typed_error() -> None:
    client, sent = client_answering(*[httpx.Response(503, json={"detail": "mongo down"})] * 3)
    with pytest.raises(ServiceUnavailable, match="mongo down"):
        client.get("J" * 26)
    assert len(sent) == FAST.max_attempts


def test_connection_errors_are_retried_then_reported_as_unreachable() -> None:
    client, sent = client_answering(*[httpx.ConnectError("refused")] * 3)
    with pytest.raises(ApiUnreachable):
        client.get("J" * 26)
    assert len(sent) == 3


def test_a_submit_that_may_have_reached_the_server_is_not_sent_twice() -> None:
    client, sent = client_answering(httpx.ReadTimeout("slow"), httpx.Response(202, json=JOB))
    with pytest.raises(ApiUnreachable):
        client.submit("general.demo", {})
    assert len(sent) == 1
    assert submit(JobSubmit(task="general.demo", idempotency_key="k")).idempotent
    assert get_job("x").idempotent


def test_error_answers_become_typed_errors_with_the_detail() -> None:
    assert isinstance(error_for(404, b'{"detail": "job not found"}', {}), NotFound)
    limited = error_for(429, b'{"detail": "slow down"}', {"Retry-After": "7"})
    assert isinstance(limited, RateLimited) and limited.retry_after_s == 7.0 and limited.detail == "slow down"
    validation = error_for(422, b'{"detail": [{"loc": ["body", "priority"], "msg": "too big"}]}', {})
    assert isinstance(validation, InvalidRequest) and validation.detail == "body.priority: too big"
    odd = error_for(502, b"<html>bad gateway</html>", {})
    assert isinstance(odd, UnexpectedStatus) and odd.status_code == 502


def test_bodies_are_checked_with_the_servers_models_before_sending() -> None:
    client, sent = client_answering()
    with pytest.raises(InvalidRequest, match="priority"):
        client.submit("general.demo", {}, priority=11)
    assert sent == []


def test_the_websocket_url_carries_token_topics_and_resume_point() -> None:
    config = ClientConfig("https://api.test/", "tok")
    assert config.ws_url(["job:A", "mine"], "E1") == "wss://api.test/ws?token=tok&topics=job%3AA%2Cmine&after=E1"
    assert ClientConfig("http://h:1").ws_url() == "ws://h:1/ws"


def test_seen_ids_drop_repeats_within_a_bounded_window() -> None:
    seen = _SeenIds(limit=2)
    assert [seen.add(event_id) for event_id in ("a", "b", "a", "c", "a")] == [True, True, False, True, True]


def test_append_steps_posts_the_steps_shaped_as_at_creation() -> None:
    # POST /workflows/{id}/steps is being added on another branch: this pins the request the client sends.
    workflow: dict[str, Any] = {"id": "W" * 26, "name": None, "state": "running", "steps": [], "tags": []}
    workflow |= {"created_at": "2026-01-01T00:00:00Z", "finished_at": None}
    client, sent = client_answering(httpx.Response(200, json=workflow))
    client.append_steps("W" * 26, [{"id": "late", "task": "general.demo", "depends_on": ["first"]}])
    assert (sent[0].method, sent[0].url.path) == ("POST", f"/workflows/{'W' * 26}/steps")
    assert json.loads(sent[0].content) == {"steps": [{"id": "late", "task": "general.demo", "depends_on": ["first"]}]}
