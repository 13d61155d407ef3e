"""Ids sort by time; tokens are refused unless signed, current and complete."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import jwt
import pytest

from engineroom.core.clock import utcnow
from engineroom.core.config import Settings
from engineroom.core.errors import Unauthenticated
from engineroom.core.ids import ID_LENGTH, is_valid_id, new_id
from engineroom.services.tokens import decode_token, issue_token
from tests.settings import make_settings

SECRET = "unit-test-secret-0123456789abcdef0123"


@pytest.fixture
def token_settings() -> Settings:
    return make_settings(jwt_secret=SECRET)


def test_ids_are_url_safe_unique_and_sort_by_time() -> None:
    earlier, later = new_id(1_700_000_000_000), new_id(1_700_000_000_001)
    assert earlier < later
    assert len({new_id() for _ in range(10_000)}) == 10_000
    assert is_valid_id(earlier) and len(earlier) == ID_LENGTH and earlier.isalnum()


def test_ids_made_in_one_millisecond_still_ascend() -> None:
    made = [new_id() for _ in range(2_000)]
    assert made == sorted(made) and len(set(made)) == len(made)


def test_an_issued_token_decodes_to_its_principal(token_settings: Settings) -> None:
    token = issue_token(token_settings, user_id="alice", tenant_id="acme", admin=True)
    who = decode_token(token_settings, token)
    assert (who.user_id, who.tenant_id, who.is_admin) == ("alice", "acme", True)


def _unsigned(claims: dict[str, object]) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.mark.parametrize(
    "make_bad_token",
    [
        pytest.param(
            lambda: jwt.encode({"sub": "a", "tenant": "t", "exp": utcnow() + timedelta(hours=1)}, "x" * 40),
            id="wrong-key",
        ),
        pytest.param(
            lambda: jwt.encode({"sub": "a", "tenant": "t", "exp": utcnow() - timedelta(seconds=5)}, SECRET),
            id="expired",
        ),
        pytest.param(lambda: jwt.encode({"sub": "a", "exp": utcnow() + timedelta(hours=1)}, SECRET), id="no-tenant"),
        pytest.param(lambda: jwt.encode({"sub": "a", "tenant": "t"}, SECRET), id="no-exp"),
        pytest.param(lambda: _unsigned({"sub": "a", "tenant": "t", "exp": 4_102_444_800}), id="alg-none"),
        pytest.param(lambda: "not-a-token", id="garbage"),
    ],
)
def test_bad_tokens_are_refused(token_settings: Settings, make_bad_token: object) -> None:
    assert callable(make_bad_token)
    with pytest.raises(Unauthenticated):
        decode_token(token_settings, make_bad_token())


def test_production_refuses_the_development_secret() -> None:
    with pytest.raises(ValueError, match="JWT_SECRET"):
        Settings(env="prod")
