"""The gateway serves its browser assets (``api/static``) at ``/static``."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_the_gateway_serves_the_javascript_client_at_static(client: TestClient) -> None:
    response = client.get("/static/engineroom.js")

    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]
    assert "window.EngineroomClient" in response.text or "root.EngineroomClient" in response.text


def test_a_missing_static_file_is_a_404(client: TestClient) -> None:
    assert client.get("/static/no-such-file.js").status_code == 404
