"""End to end over real processes: submit over HTTP, run on an engine worker, watch it on a real WebSocket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from engineroom.core.config import ENGINES

TokenFor = Callable[..., str]
#: Seconds any single expected event may take.
EVENT_TIMEOUT_S = 20.0


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ws_url(base_url: str, token: str) -> str:
    return base_url.replace("http://", "ws://") + f"/ws?token={token}"


async def connect(base_url: str, token: str) -> ClientConnection:
    socket = await websockets.connect(ws_url(base_url, token))
    hello = json.loads(await asyncio.wait_for(socket.recv(), EVENT_TIMEOUT_S))
    assert hello["type"] == "hello"
    return socket


async def events_until(socket: ClientConnection, done: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Every event received up to and including the first for which ``done`` holds."""
    received: list[dict[str, Any]] = []
    while True:
        event = json.loads(await asyncio.wait_for(socket.recv(), EVENT_TIMEOUT_S))
        received.append(event)
        if done(event):
            return received


async def submit(http: httpx.AsyncClient, token: str, task: str, payload: dict[str, Any]) -> str:
    response = await http.post("/jobs", json={"task": task, "payload": payload}, headers=auth(token))
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def is_terminal_event_of(job_ids: set[str]) -> Callable[[dict[str, Any]], bool]:
    finished: set[str] = set()

    def done(event: dict[str, Any]) -> bool:
        if event["type"] in ("job.completed", "job.failed") and event["job_id"] in job_ids:
            finished.add(event["job_id"])
        return finished == job_ids

    return done


async def test_a_job_runs_on_a_worker_process_and_its_life_streams_over_the_websocket(
    stack: Any, token_for: TokenFor
) -> None:
    base_url = stack.start_api()
    stack.start_worker()
    token = token_for("alice", "acme")
    socket = await connect(base_url, token)
    async with httpx.AsyncClient(base_url=base_url) as http:
        job_id = await submit(http, token, "general.demo", {"duration_s": 0.3, "steps": 3, "result": "hello"})
        events = await events_until(socket, is_terminal_event_of({job_id}))
        stored = (await http.get(f"/jobs/{job_id}", headers=auth(token))).json()
    await socket.close()
    assert [event["type"] for event in events] == [
        "job.queued",
        "job.started",
        "job.progress",
        "job.progress",
        "job.progress",
        "job.completed",
    ]
    assert all(event["job_id"] == job_id for event in events)
    assert [event["data"]["percent"] for event in events if event["type"] == "job.progress"] == pytest.approx(
        [100 / 3, 200 / 3, 100]
    )
    assert events[-1]["data"]["result"] == {"engine": "general", "steps": 3, "result": "hello"}
    # Ids sort by time: those one process made ascend; across processes, only by millisecond
    from_worker = [event["id"] for event in events[1:]]
    assert from_worker == sorted(from_worker) and events[0]["id"][:10] <= events[1]["id"][:10]
    assert stored["state"] == "completed" and stored["result"]["result"] == "hello"
    assert datetime.fromisoformat(stored["started_at"]) <= datetime.fromisoformat(stored["finished_at"])
    assert [entry["state"] for entry in stored["history"]] == ["queued", "running", "completed"]


async def test_every_engine_runs_its_demo_job_end_to_end(stack: Any, token_for: TokenFor) -> None:
    base_url = stack.start_api()
    stack.start_worker()
    token = token_for("alice", "acme")
    socket = await connect(base_url, token)
    async with httpx.AsyncClient(base_url=base_url) as http:
        job_ids = {
            await submit(http, token, f"{engine}.demo", {"duration_s": 0.1, "steps": 2, "result": engine}): engine
            for engine in ENGINES
        }
        events = await events_until(socket, is_terminal_event_of(set(job_ids)))
        listed = (await http.get("/jobs", params={"state": "completed", "limit": 50}, headers=auth(token))).json()
    await socket.close()
    completed = {event["job_id"]: event for event in events if event["type"] == "job.completed"}
    assert set(completed) == set(job_ids)
    for job_id, engine in job_ids.items():
        assert completed[job_id]["data"]["engine"] == engine
        assert completed[job_id]["data"]["result"] == {"engine": engine, "steps": 2, "result": engine}
        started = [event for event in events if event["job_id"] == job_id and event["type"] == "job.started"]
        assert len(started) == 1
    assert {job["id"] for job in listed["items"]} == set(job_ids)


async def test_a_failing_job_ends_failed_with_its_error(stack: Any, token_for: TokenFor) -> None:
    base_url = stack.start_api()
    stack.start_worker("--engines", "audio_generation")
    token = token_for()
    socket = await connect(base_url, token)
    async with httpx.AsyncClient(base_url=base_url) as http:
        job_id = await submit(http, token, "audio_generation.demo", {"duration_s": 0, "fail": "permanent"})
        events = await events_until(socket, is_terminal_event_of({job_id}))
        stored = (await http.get(f"/jobs/{job_id}", headers=auth(token))).json()
    await socket.close()
    assert events[-1]["type"] == "job.failed"
    assert events[-1]["data"]["error"]["type"] == "PermanentError"
    assert stored["state"] == "failed" and "Traceback" in stored["error"]["traceback"]


async def test_strangers_get_404_and_hear_nothing_and_bad_tokens_get_401(stack: Any, token_for: TokenFor) -> None:
    base_url = stack.start_api()
    stack.start_worker()
    alice, bob, mallory = token_for("alice", "acme"), token_for("bob", "acme"), token_for("alice", "evil")
    alice_socket = await connect(base_url, alice)
    strangers = [await connect(base_url, bob), await connect(base_url, mallory)]
    async with httpx.AsyncClient(base_url=base_url) as http:
        job_id = await submit(http, alice, "general.demo", {"duration_s": 0.2, "steps": 2})
        await events_until(alice_socket, is_terminal_event_of({job_id}))
        for token in (bob, mallory):
            assert (await http.get(f"/jobs/{job_id}", headers=auth(token))).status_code == 404
            assert (await http.get("/jobs", headers=auth(token))).json()["items"] == []
        for bad in ("", "Bearer forged.token.value", f"Bearer {alice}x"):
            assert (await http.get("/jobs", headers={"Authorization": bad})).status_code == 401
    # Alice's events have all been delivered; a stranger's socket answers the ping with nothing queued before it.
    for socket in strangers:
        await socket.send(json.dumps({"op": "ping"}))
        assert json.loads(await asyncio.wait_for(socket.recv(), EVENT_TIMEOUT_S)) == {"type": "pong"}
        await socket.close()
    await alice_socket.close()
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(ws_url(base_url, "forged"))
    assert refused.value.response.status_code == 401


async def test_two_gateways_each_deliver_every_event(stack: Any, token_for: TokenFor) -> None:
    first, second = stack.start_api("api-1"), stack.start_api("api-2")
    stack.start_worker()
    token = token_for()
    sockets = [await connect(first, token), await connect(second, token)]
    async with httpx.AsyncClient(base_url=first) as http:
        job_id = await submit(http, token, "general.demo", {"duration_s": 0.1, "steps": 1})
    streams = [await events_until(socket, is_terminal_event_of({job_id})) for socket in sockets]
    for socket in sockets:
        await socket.close()
    assert [event["id"] for event in streams[0]] == [event["id"] for event in streams[1]]
    assert [event["type"] for event in streams[1]] == ["job.queued", "job.started", "job.progress", "job.completed"]


USER_TASK_MODULE = '''
from engineroom.actors import JobContext, task


@task("text_intelligence", name="shout", max_retries=1, timeout_s=30)
def shout(ctx: JobContext, text: str, times: int = 1) -> dict:
    """Upper-case the text."""
    ctx.progress(50, "shouting")
    return {"text": (text.upper() + " ") * times}
'''


async def test_tasks_from_task_modules_are_listed_validated_and_run(stack: Any, token_for: TokenFor) -> None:
    stack.load_tasks("user_tasks_e2e", USER_TASK_MODULE)
    base_url = stack.start_api()
    stack.start_worker("--engines", "text_intelligence")
    token = token_for()
    socket = await connect(base_url, token)
    async with httpx.AsyncClient(base_url=base_url) as http:
        tasks = {entry["name"]: entry for entry in (await http.get("/tasks", headers=auth(token))).json()}
        assert tasks["text_intelligence.shout"]["payload_schema"]["required"] == ["text"]
        assert tasks["text_intelligence.shout"]["description"] == "Upper-case the text."
        missing = await http.post("/jobs", json={"task": "text_intelligence.shout", "payload": {}}, headers=auth(token))
        assert missing.status_code == 422 and "text" in missing.json()["detail"]
        job_id = await submit(http, token, "text_intelligence.shout", {"text": "hi", "times": 2})
        events = await events_until(socket, is_terminal_event_of({job_id}))
    await socket.close()
    assert events[-1]["type"] == "job.completed"
    assert events[-1]["data"]["result"] == {"text": "HI HI "}
