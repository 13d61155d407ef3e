"""Forged, expired and incomplete JWTs, tried on every protected endpoint of the route table and on the WebSocket
(in the URL and as a ``bearer`` subprotocol): each is refused with 401, and nothing else answers."""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Callable
from datetime import timedelta

import jwt
import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from engineroom.core.clock import utcnow
from tests.security.conftest import Victim, bearer
from tests.security.routes import PROTECTED, Endpoint
from tests.settings import TEST_JWT_SECRET


def _in_an_hour() -> int:
    return int((utcnow() + timedelta(hours=1)).timestamp())


def _unsigned(claims: dict[str, object]) -> str:
    """``alg: none``, no signature: what PyJWT refuses to make, made by hand."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def _signed(claims: dict[str, object], key: str = TEST_JWT_SECRET, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():  # the test secret is short for HS512; the point is the algorithm
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(claims, key, algorithm=algorithm)


ADMIN: dict[str, object] = {"sub": "mallory", "tenant": "acme", "roles": ["admin"]}
#: Each a token that looks like an admin's and must be worth nothing.
BAD_TOKENS: dict[str, Callable[[], str]] = {
    "alg-none": lambda: _unsigned({**ADMIN, "exp": _in_an_hour()}),
    "wrong-key": lambda: _signed({**ADMIN, "exp": _in_an_hour()}, key="another-secret-0123456789abcdef0123"),
    "other-algorithm": lambda: _signed({**ADMIN, "exp": _in_an_hour()}, algorithm="HS512"),
    "expired": lambda: _signed({**ADMIN, "exp": int((utcnow() - timedelta(seconds=5)).timestamp())}),
    "no-exp": lambda: _signed(ADMIN),
    "no-sub": lambda: _signed({"tenant": "acme", "roles": ["admin"], "exp": _in_an_hour()}),
    "no-tenant": lambda: _signed({"sub": "mallory", "roles": ["admin"], "exp": _in_an_hour()}),
    "empty-tenant": lambda: _signed({**ADMIN, "tenant": "", "exp": _in_an_hour()}),
    "roles-not-a-list": lambda: _signed({**ADMIN, "roles": "admin", "exp": _in_an_hour()}),
    "tampered": lambda: _signed({**ADMIN, "exp": _in_an_hour()})[:-3] + "AAA",
    "garbage": lambda: "not.a.token",
}


@pytest.fixture(scope="module")
def bad_tokens() -> dict[str, str]:
    return {name: make() for name, make in BAD_TOKENS.items()}


@pytest.mark.parametrize("endpoint", PROTECTED, ids=str)
def test_every_protected_endpoint_refuses_every_bad_token_with_401(
    gateway: TestClient, victim: Victim, bad_tokens: dict[str, str], endpoint: Endpoint
) -> None:
    url = endpoint.url(victim.ids)
    for name, token in bad_tokens.items():
        response = gateway.request(
            endpoint.method, url, json={} if endpoint.takes_body else None, headers=bearer(token)
        )
        assert response.status_code == 401, f"{endpoint} with a {name} token: {response.status_code} {response.text}"
        assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("name", sorted(BAD_TOKENS))
def test_the_websocket_refuses_a_bad_token_in_the_url_or_as_a_subprotocol(
    gateway: TestClient, bad_tokens: dict[str, str], name: str
) -> None:
    token = bad_tokens[name]
    with pytest.raises(WebSocketDenialResponse) as in_url, gateway.websocket_connect(f"/ws?token={token}"):
        pass
    with (
        pytest.raises(WebSocketDenialResponse) as as_subprotocol,
        gateway.websocket_connect("/ws", subprotocols=["bearer", token]),
    ):
        pass
    assert in_url.value.status_code == as_subprotocol.value.status_code == 401
