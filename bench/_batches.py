"""Batch submits over ``POST /jobs/batch``: shared by the delayed-jobs benchmark and the batch-submit one, so both
post the same way (pre-encoded bodies, requests in flight, a deadline)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench._common import auth, chunks


@dataclass(frozen=True)
class Batches:
    """What to post: ``jobs`` copies of ``job`` in requests of at most ``size``, ``concurrency`` in flight; no new
    request starts after ``timeout_s``."""

    job: dict[str, Any]
    jobs: int
    size: int
    concurrency: int
    timeout_s: float


@dataclass
class SubmitProgress:
    accepted: int = 0
    latencies: list[float] = field(default_factory=list)


async def _submitter(
    client: httpx.AsyncClient, bodies: dict[int, bytes], batches: Iterator[int], deadline: float, done: SubmitProgress
) -> None:
    """Post batches from the shared iterator until it is empty or the deadline has passed."""
    for size in batches:
        if time.monotonic() > deadline:
            return
        sent = time.perf_counter()
        response = await client.post("/jobs/batch", content=bodies[size], headers={"Content-Type": "application/json"})
        if response.status_code != 202:
            raise RuntimeError(f"POST /jobs/batch answered {response.status_code}: {response.text[:300]}")
        ids = response.json()["ids"]
        if len(ids) != size:
            raise RuntimeError(f"POST /jobs/batch accepted {len(ids)} of {size} jobs")
        done.latencies.append(time.perf_counter() - sent)
        done.accepted += size


async def submit_batches(
    base_url: str, token: str, batches: Batches, done: SubmitProgress | None = None
) -> tuple[SubmitProgress, float]:
    """Every batch, ``batches.concurrency`` in flight; returns the progress and the seconds it took. Bodies are
    encoded before the clock starts: the client's JSON work is not the server's. Pass ``done`` to read the
    progress while it runs, or after it was cancelled."""
    sizes = list(chunks(batches.jobs, batches.size))
    bodies = {size: json.dumps({"jobs": [batches.job] * size}).encode() for size in set(sizes)}
    shared = iter(sizes)  # each submitter takes the next one
    done = SubmitProgress() if done is None else done
    limits = httpx.Limits(max_connections=batches.concurrency, max_keepalive_connections=batches.concurrency)
    async with httpx.AsyncClient(base_url=base_url, headers=auth(token), limits=limits, timeout=120) as client:
        deadline = time.monotonic() + batches.timeout_s
        start = time.perf_counter()
        submitters = (_submitter(client, bodies, shared, deadline, done) for _ in range(batches.concurrency))
        await asyncio.gather(*submitters)
        return done, time.perf_counter() - start
