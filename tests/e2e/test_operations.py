"""Operations over real processes: structured logs of a worker process, readiness while a dependency is down."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from engineroom.core.embedded import EmbeddedDatabase
from tests.e2e.test_reliability import TcpProxy, via_proxy
from tests.e2e.test_walking_skeleton import TokenFor, auth, submit
from tests.ports import free_port


async def test_a_worker_logs_json_lines_tagged_with_the_job_including_the_tasks_own(
    stack: Any, token_for: TokenFor
) -> None:
    base_url = stack.start_api()
    worker = stack.start_worker()
    token = token_for("alice", "acme")
    async with httpx.AsyncClient(base_url=base_url) as http:
        job_id = await submit(http, token, "general.demo", {"duration_s": 0, "steps": 1, "fail": "permanent"})
        for _ in range(200):
            if (await http.get(f"/jobs/{job_id}", headers=auth(token))).json()["state"] == "failed":
                break
            await asyncio.sleep(0.1)
    # Dramatiq's main process relays its worker processes' output through a pipe: the lines may land a little
    # after the job's state does.
    for _ in range(100):
        lines = [json.loads(text) for text in worker.log_path.read_text().splitlines() if text.startswith("{")]
        tagged = [line for line in lines if line.get("job_id") == job_id]
        if len(tagged) >= 2:
            break
        await asyncio.sleep(0.1)
    assert {line["logger"] for line in tagged} >= {"engineroom.actors.demo", "engineroom.actors.runner"}, lines[-5:]
    assert all(
        (line["engine"], line["tenant_id"], line["task"]) == ("general", "acme", "general.demo") for line in tagged
    )
    assert any(line["message"].startswith("demo: 1 step(s)") for line in tagged)


async def wait_for_readiness(http: httpx.AsyncClient, status_code: int, timeout_s: float = 30) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        ready = await http.get("/readyz")
        if ready.status_code == status_code or asyncio.get_running_loop().time() > deadline:
            assert ready.status_code == status_code, ready.text
            answer: dict[str, Any] = ready.json()
            return answer
        await asyncio.sleep(0.2)


async def test_readyz_names_rabbitmq_or_mongodb_while_it_is_down_and_recovers_after(
    stack: Any, amqp_url: str, tmp_path: Path
) -> None:
    upstream = urlsplit(amqp_url)
    proxy = TcpProxy((upstream.hostname or "127.0.0.1", upstream.port or 5672))
    proxy.up()
    database = EmbeddedDatabase(tmp_path / "own-db", port=free_port()).start()
    try:
        env = {"ENGINEROOM_AMQP_URL": via_proxy(amqp_url, proxy.port), "ENGINEROOM_MONGODB_URL": database.url}
        base_url = stack.start_api(env=env)
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            proxy.down()
            checks = (await wait_for_readiness(http, 503))["checks"]
            assert checks["mongodb"] == "ok" and checks["rabbitmq"] != "ok"
            proxy.up()
            assert (await wait_for_readiness(http, 200))["checks"] == {"mongodb": "ok", "rabbitmq": "ok"}
            database.stop()
            checks = (await wait_for_readiness(http, 503))["checks"]
            assert checks["mongodb"] != "ok" and checks["rabbitmq"] == "ok"
            database.start()
            assert (await wait_for_readiness(http, 200))["checks"] == {"mongodb": "ok", "rabbitmq": "ok"}
    finally:
        proxy.down()
        database.stop()
