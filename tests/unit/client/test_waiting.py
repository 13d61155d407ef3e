"""The blocking ``Client.wait`` when the WebSocket is refused: it polls ``GET /jobs/{id}`` (answered by
``httpx.MockTransport``) against a port where nothing listens, so the socket is refused for real."""

from __future__ import annotations

import httpx
import pytest

from engineroom.client.errors import WaitTimedOut
from tests.ports import free_port
from tests.unit.client.test_transport import JOB, client_answering


def answer(state: str) -> httpx.Response:
    return httpx.Response(200, json=JOB | {"state": state})


def test_the_blocking_wait_polls_until_the_job_ends_when_the_socket_is_refused() -> None:
    # Given a gateway whose WebSocket cannot be reached, and a job that finishes at the third read
    client, sent = client_answering(
        answer("queued"), answer("running"), answer("completed"), base_url=f"http://127.0.0.1:{free_port()}"
    )
    # When waiting for it
    finished = client.wait("J" * 26, timeout_s=10)
    # Then the polls saw it finish
    assert finished.state == "completed"
    assert [request.url.path for request in sent] == [f"/jobs/{'J' * 26}"] * 3


def test_the_blocking_wait_gives_up_polling_at_its_timeout() -> None:
    client, _ = client_answering(*[answer("queued")] * 50, base_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(WaitTimedOut, match="it is queued"):
        client.wait("J" * 26, timeout_s=0.5)
