"""The OpenAPI document describes the error answers the gateway really gives (found by tests/fuzz)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import TokenFor


def test_a_422_naming_the_problem_in_a_sentence_is_what_the_schema_documents(
    client: TestClient, token_for: TokenFor
) -> None:
    # FastAPI documents 422 as a list of field errors; an unknown task is answered with a sentence
    response = client.post("/jobs", json={"task": "general.nope"}, headers={"Authorization": f"Bearer {token_for()}"})
    assert response.status_code == 422 and isinstance(response.json()["detail"], str)
    schema = client.get("/openapi.json").json()
    documented = schema["paths"]["/jobs"]["post"]["responses"]["422"]["content"]["application/json"]["schema"]
    assert documented == {"$ref": "#/components/schemas/ErrorBody"}
    detail = schema["components"]["schemas"]["ErrorBody"]["properties"]["detail"]
    assert {"type": "string"} in detail["anyOf"]


def test_a_body_that_is_not_json_gets_a_documented_400(client: TestClient, token_for: TokenFor) -> None:
    response = client.post(
        "/workflows",
        content=b"\x14\xff~",
        headers={"Authorization": f"Bearer {token_for()}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert "400" in client.get("/openapi.json").json()["paths"]["/workflows"]["post"]["responses"]
