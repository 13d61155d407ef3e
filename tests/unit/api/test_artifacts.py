"""Artifacts through the gateway, with jobs run in process over a real SecantusDB (GridFS): saving, listing,
downloading whole and by range, signed links, who may see them, the limits, and deletion with the job."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from engineroom.actors import JobContext, task
from engineroom.actors.media import make_png
from engineroom.core.config import Settings
from engineroom.core.errors import TransientError
from tests.gateway import gateway_settings

TokenFor = Callable[..., str]

#: What ``save_three_ways`` saves: made of repeating 4 KiB blocks, 2.5 chunks long.
CONTENT = bytes(range(256)) * 16 * 640
#: The limits of these tests' gateway: an artifact, and all of one job's.
MAX_ARTIFACT_BYTES = 3 * 1024 * 1024
MAX_JOB_BYTES = 8 * 1024 * 1024


@task("general", name="save_three_ways", max_retries=0, timeout_s=60)
def save_three_ways(ctx: JobContext, path: str) -> dict[str, int]:
    ctx.save_artifact("from-bytes.bin", CONTENT)
    ctx.save_artifact("from-file.bin", io.BytesIO(CONTENT), content_type="application/x-test")
    record = ctx.save_artifact("from-path.txt", path)
    return {"size": record.size_bytes}


@task("general", name="save_bytes", max_retries=0, timeout_s=60)
def save_bytes(ctx: JobContext, size: int, name: str = "out.bin", count: int = 1) -> None:
    for number in range(count):
        ctx.save_artifact(name if count == 1 else f"{number}-{name}", b"x" * size)


@task("general", name="save_then_fail_once", max_retries=2, timeout_s=60)
def save_then_fail_once(ctx: JobContext) -> None:
    attempt = ctx.job.attempts
    ctx.save_artifact(f"attempt-{attempt}.txt", str(attempt).encode())
    ctx.save_artifact("same.txt", f"from attempt {attempt}".encode())
    if attempt == 1:
        raise TransientError("the first attempt fails after saving")


@task("general", name="return_bytes", max_retries=0, timeout_s=60)
def return_bytes(ctx: JobContext) -> bytes:
    return b"\x89PNG not json"


@task("general", name="return_big_json", max_retries=0, timeout_s=60)
def return_big_json(ctx: JobContext, size: int) -> dict[str, str]:
    return {"text": "y" * size}


@task("general", name="read_input_artifact", max_retries=0, timeout_s=60)
def read_input_artifact(ctx: JobContext) -> dict[str, Any]:
    names = [record.name for record in ctx.input_artifacts("draw")]
    with ctx.open_input_artifact("draw", "image.png") as file:
        digest = hashlib.sha256(file.read()).hexdigest()
    return {"names": names, "sha256": digest}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def run(client: TestClient, token: str, task_name: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    response = client.post("/jobs", json={"task": task_name, "payload": payload or {}}, headers=auth(token))
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}", headers=auth(token)).json()
        if job["state"] in ("completed", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def listed(client: TestClient, token: str, job_id: str) -> dict[str, dict[str, Any]]:
    response = client.get(f"/jobs/{job_id}/artifacts", headers=auth(token))
    assert response.status_code == 200, response.text
    return {item["name"]: item for item in response.json()["items"]}


@pytest.fixture
def app_settings(settings: Settings, mongodb_url: str) -> Settings:
    return gateway_settings(
        settings, mongodb_url, max_artifact_bytes=MAX_ARTIFACT_BYTES, max_job_artifacts_bytes=MAX_JOB_BYTES
    )


def test_a_task_saves_bytes_a_file_object_and_a_path_and_each_downloads_intact(
    client: TestClient, token_for: TokenFor, tmp_path: Any
) -> None:
    token = token_for()
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello artifacts\n")
    job = run(client, token, "general.save_three_ways", {"path": str(path)})
    assert job["state"] == "completed", job["error"]
    items = listed(client, token, job["id"])
    assert [record["name"] for record in job["artifacts"]] == ["from-bytes.bin", "from-file.bin", "from-path.txt"]
    assert items["from-bytes.bin"]["size_bytes"] == len(CONTENT)
    assert items["from-bytes.bin"]["sha256"] == hashlib.sha256(CONTENT).hexdigest()
    assert items["from-bytes.bin"]["content_type"] == "application/octet-stream"
    assert items["from-file.bin"]["content_type"] == "application/x-test"
    assert items["from-path.txt"]["content_type"] == "text/plain" and items["from-path.txt"]["attempt"] == 1
    for name, expected in (
        ("from-bytes.bin", CONTENT),
        ("from-file.bin", CONTENT),
        ("from-path.txt", path.read_bytes()),
    ):
        response = client.get(f"/jobs/{job['id']}/artifacts/{name}", headers=auth(token))
        assert response.status_code == 200 and response.content == expected
        assert response.headers["content-length"] == str(len(expected))
        assert response.headers["etag"] == f'"{hashlib.sha256(expected).hexdigest()}"'
        assert response.headers["x-content-type-options"] == "nosniff"


def test_ranges_answer_206_with_the_bytes_asked_for_and_416_past_the_end(
    client: TestClient, token_for: TokenFor
) -> None:
    token = token_for()
    job = run(client, token, "general.save_three_ways", {"path": __file__})
    url = f"/jobs/{job['id']}/artifacts/from-bytes.bin"
    size = len(CONTENT)
    # Across the 1 MiB chunk boundary, an open end, a suffix.
    for header, start, end in (
        ("bytes=1048000-1049999", 1048000, 1050000),
        (f"bytes={size - 10}-", size - 10, size),
        ("bytes=-100", size - 100, size),
        ("bytes=0-0", 0, 1),
        (f"bytes=5-{size * 2}", 5, size),
    ):
        response = client.get(url, headers={**auth(token), "Range": header})
        assert response.status_code == 206, (header, response.text)
        assert response.content == CONTENT[start:end], header
        assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{size}"
        assert response.headers["content-length"] == str(end - start)
    past = client.get(url, headers={**auth(token), "Range": f"bytes={size}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{size}"
    ignored = client.get(url, headers={**auth(token), "Range": "bytes=0-1,5-6"})  # several ranges: the whole file
    assert ignored.status_code == 200 and ignored.content == CONTENT
    etag = ignored.headers["etag"]
    for current in (etag, f'"other", W/{etag}', "*"):
        cached = client.get(url, headers={**auth(token), "If-None-Match": current})
        assert cached.status_code == 304 and cached.content == b"" and cached.headers["etag"] == etag
    assert client.get(url, headers={**auth(token), "If-None-Match": '"other"'}).status_code == 200


def test_a_signed_link_opens_its_one_file_without_a_token_until_it_expires(
    client: TestClient, token_for: TokenFor
) -> None:
    token = token_for()
    job = run(client, token, "general.save_three_ways", {"path": __file__})
    items = listed(client, token, job["id"])
    link = items["from-bytes.bin"]["url"]
    assert client.get(link).status_code == 200 and client.get(link).content == CONTENT
    query = parse_qs(urlsplit(link).query)
    sig, exp = query["sig"][0], query["exp"][0]
    other = f"/jobs/{job['id']}/artifacts/from-file.bin?exp={exp}&sig={sig}"
    assert client.get(other).status_code == 404  # signed for another file
    later = f"/jobs/{job['id']}/artifacts/from-bytes.bin?exp={int(exp) + 1}&sig={sig}"
    assert client.get(later).status_code == 404  # its expiry pushed back: the signature no longer fits
    assert client.get(f"/jobs/{job['id']}/artifacts/from-bytes.bin?sig={sig}").status_code == 401
    assert client.get(f"/jobs/{job['id']}/artifacts/from-bytes.bin").status_code == 401


def test_an_expired_signed_link_is_refused(client: TestClient, token_for: TokenFor, app_settings: Settings) -> None:
    from engineroom.artifacts.signing import signed_path

    token = token_for()
    job = run(client, token, "general.save_three_ways", {"path": __file__})
    expired, _ = signed_path(app_settings, job["id"], "from-bytes.bin", now_s=time.time() - 2 * 900)
    fresh, _ = signed_path(app_settings, job["id"], "from-bytes.bin")
    assert client.get(expired).status_code == 403
    assert client.get(fresh).status_code == 200


def test_another_user_or_tenant_gets_the_404_of_a_missing_job(client: TestClient, token_for: TokenFor) -> None:
    token = token_for("alice", "acme")
    job = run(client, token, "general.save_three_ways", {"path": __file__})
    missing = "0" * 26
    for intruder in (token_for("bob", "acme"), token_for("eve", "globex", admin=True)):
        for path in (f"/jobs/{job['id']}/artifacts", f"/jobs/{job['id']}/artifacts/from-bytes.bin"):
            answer = client.get(path, headers=auth(intruder))
            absent = client.get(path.replace(job["id"], missing), headers=auth(intruder))
            assert answer.status_code == absent.status_code == 404
            assert answer.json()["detail"].replace(job["id"], missing) == absent.json()["detail"]
    admin = token_for("root", "acme", admin=True)
    assert client.get(f"/jobs/{job['id']}/artifacts/from-bytes.bin", headers=auth(admin)).content == CONTENT
    assert client.get(f"/jobs/{job['id']}/artifacts/no-such.bin", headers=auth(token)).status_code == 404


def test_an_artifact_over_its_limit_fails_the_job_for_good_with_a_message(
    client: TestClient, token_for: TokenFor
) -> None:
    token = token_for()
    job = run(client, token, "general.save_bytes", {"size": MAX_ARTIFACT_BYTES + 1})
    assert job["state"] == "failed" and job["attempts"] == 1
    assert job["error"]["type"] == "ArtifactTooLarge" and not job["error"]["transient"]
    assert "ENGINEROOM_MAX_ARTIFACT_BYTES" in job["error"]["message"]
    assert job["artifacts"] == [] and listed(client, token, job["id"]) == {}
    db = client.app.state.db  # type: ignore[attr-defined]
    assert client.portal.call(lambda: db["fs.chunks"].count_documents({})) == 0  # type: ignore[union-attr]


def test_a_job_whose_artifacts_pass_its_total_fails_at_the_one_that_does(
    client: TestClient, token_for: TokenFor
) -> None:
    token = token_for()
    job = run(client, token, "general.save_bytes", {"size": MAX_ARTIFACT_BYTES, "count": 3})
    assert job["state"] == "failed" and job["error"]["type"] == "ArtifactTooLarge"
    assert "ENGINEROOM_MAX_JOB_ARTIFACTS_BYTES" in job["error"]["message"]
    assert [record["name"] for record in job["artifacts"]] == ["0-out.bin", "1-out.bin"]


def test_a_bad_artifact_name_fails_the_job_with_a_message(client: TestClient, token_for: TokenFor) -> None:
    job = run(client, token_for(), "general.save_bytes", {"size": 1, "name": "../etc/passwd"})
    assert job["state"] == "failed" and job["error"]["type"] == "InvalidArtifact"
    assert "artifact name" in job["error"]["message"]


def test_raw_bytes_or_an_oversized_result_fail_the_job_saying_to_save_an_artifact(
    client: TestClient, token_for: TokenFor, app_settings: Settings
) -> None:
    token = token_for()
    raw = run(client, token, "general.return_bytes")
    big = run(client, token, "general.return_big_json", {"size": app_settings.max_result_bytes})
    for job in (raw, big):
        assert job["state"] == "failed" and job["error"]["type"] == "ResultTooLarge", job["error"]
        assert not job["error"]["transient"] and "ctx.save_artifact" in job["error"]["message"]
    assert "raw bytes" in raw["error"]["message"] and "ENGINEROOM_MAX_RESULT_BYTES" in big["error"]["message"]
    assert run(client, token, "general.return_big_json", {"size": 1000})["state"] == "completed"  # the worker lives


def test_the_demo_image_is_a_png_the_step_after_it_can_read(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    steps = [
        {"id": "draw", "task": "image_generation.demo", "payload": {"duration_s": 0, "width": 64, "height": 48}},
        {"id": "check", "task": "general.read_input_artifact", "depends_on": ["draw"]},
    ]
    workflow = client.post("/workflows", json={"steps": steps}, headers=auth(token)).json()
    deadline = time.monotonic() + 20
    while client.get(f"/workflows/{workflow['id']}", headers=auth(token)).json()["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    jobs = client.get(f"/jobs?workflow_id={workflow['id']}", headers=auth(token)).json()["items"]
    by_step = {job["step_id"]: job for job in jobs}
    png = make_png(64, 48, 0)
    assert by_step["check"]["state"] == "completed", by_step["check"]["error"]
    assert by_step["check"]["result"] == {"names": ["image.png"], "sha256": hashlib.sha256(png).hexdigest()}
    image = client.get(f"/jobs/{by_step['draw']['id']}/artifacts/image.png", headers=auth(token))
    assert image.headers["content-type"] == "image/png" and image.content == png


def test_deleting_a_job_deletes_its_artifacts(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    job = run(client, token, "general.save_three_ways", {"path": __file__})
    db = client.app.state.db  # type: ignore[attr-defined]
    files = client.portal.call(lambda: db["fs.files"].count_documents({"metadata.job_id": job["id"]}))  # type: ignore[union-attr]
    assert files == 3
    assert client.delete(f"/jobs/{job['id']}", headers=auth(token)).status_code == 204
    left = client.portal.call(lambda: db["fs.files"].count_documents({"metadata.job_id": job["id"]}))  # type: ignore[union-attr]
    assert left == 0


def file_count(client: TestClient, job_id: str) -> int:
    db = client.app.state.db  # type: ignore[attr-defined]
    count: int = client.portal.call(lambda: db["fs.files"].count_documents({"metadata.job_id": job_id}))  # type: ignore[union-attr]
    return count


def test_the_sweep_deletes_the_files_of_jobs_the_retention_ttl_removed(client: TestClient, token_for: TokenFor) -> None:
    from engineroom.artifacts.sweep import ArtifactSweeper
    from engineroom.store.jobs import JobStore

    token = token_for()
    kept = run(client, token, "general.save_three_ways", {"path": __file__})
    expired = run(client, token, "general.save_three_ways", {"path": __file__})
    db = client.app.state.db  # type: ignore[attr-defined]
    # MongoDB's TTL monitor deletes the document and tells nobody
    portal = client.portal
    assert portal is not None
    portal.call(lambda: db["jobs"].delete_one({"_id": expired["id"]}))
    sweeper = ArtifactSweeper(client.app.state.artifacts, JobStore(db), per_sweep=1)  # type: ignore[attr-defined]
    deleted = [portal.call(sweeper.sweep) for _ in range(3)]  # one job per sweep, resuming in turn
    assert sum(deleted) == 1
    assert file_count(client, expired["id"]) == 0 and file_count(client, kept["id"]) == 3


def test_engineroom_cleanup_deletes_finished_jobs_with_their_files(
    client: TestClient, token_for: TokenFor, app_settings: Settings
) -> None:
    from datetime import timedelta

    from engineroom.services.cleanup import delete_finished_jobs

    job = run(client, token_for(), "general.save_three_ways", {"path": __file__})
    assert file_count(client, job["id"]) == 3
    assert client.portal is not None
    deleted = client.portal.call(lambda: delete_finished_jobs(app_settings, timedelta(0), None, dry_run=False))
    assert deleted == 1 and file_count(client, job["id"]) == 0


def test_a_retried_job_keeps_each_attempts_files_saying_which_made_them(
    client: TestClient, token_for: TokenFor
) -> None:
    token = token_for()
    job = run(client, token, "general.save_then_fail_once")
    assert job["state"] == "completed" and job["attempts"] == 2
    made_by = {record["name"]: record["attempt"] for record in job["artifacts"]}
    assert made_by == {"attempt-1.txt": 1, "same.txt": 2, "attempt-2.txt": 2}
    same = client.get(f"/jobs/{job['id']}/artifacts/same.txt", headers=auth(token))
    assert same.content == b"from attempt 2"
    assert file_count(client, job["id"]) == 3  # the first attempt's same.txt was replaced, not kept
