"""Operations over real processes: structured logs of a worker process."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from tests.e2e.test_walking_skeleton import TokenFor, auth, submit


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
    lines = []
    for text in worker.log_path.read_text().splitlines():
        if text.startswith("{"):
            lines.append(json.loads(text))
    tagged = [line for line in lines if line.get("job_id") == job_id]
    assert {line["logger"] for line in tagged} >= {"engineroom.actors.demo", "engineroom.actors.runner"}, lines[-5:]
    assert all(
        (line["engine"], line["tenant_id"], line["task"]) == ("general", "acme", "general.demo") for line in tagged
    )
    assert any(line["message"].startswith("demo: 1 step(s)") for line in tagged)
