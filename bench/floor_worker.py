"""Entry module of the floor baseline's worker: ``dramatiq bench.floor_worker --queues <queue>``.

The least a job system on Dramatiq and MongoDB can do per job: a plain actor that keeps a minimal job document.
The producer (``bench/floor.py``) inserts ``{state: queued}`` and sends the document's id; this actor makes two
``update_one``, ``running`` and then ``completed`` with a result, on collection ``jobs`` of ``BENCH_MONGODB_DB``,
and appends its finish time (Unix seconds) as one line to ``BENCH_FLOOR_COUNTER``, as ``bench.raw_worker`` does.
No index but ``_id``, no events, no slots: whatever engineroom costs beyond this is its own.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

import dramatiq
import pymongo
from bson import ObjectId
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from pymongo.collection import Collection

from engineroom.messaging.broker import MAX_PRIORITY

QUEUE = os.environ["BENCH_FLOOR_QUEUE"]
COUNTER = os.environ["BENCH_FLOOR_COUNTER"]

# Same queue arguments (x-max-priority) as engineroom's queues, so only the work per message differs.
broker = RabbitmqBroker(url=os.environ["BENCH_AMQP_URL"], max_priority=MAX_PRIORITY)
dramatiq.set_broker(broker)

_client_lock = threading.Lock()
_jobs: list[Collection[dict[str, Any]]] = []


def _collection() -> Collection[dict[str, Any]]:
    """The ``jobs`` collection, through one client per worker process made on first use: Dramatiq imports this
    module before it forks, and a pymongo client must not cross a fork."""
    with _client_lock:
        if not _jobs:
            client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(os.environ["BENCH_MONGODB_URL"])
            _jobs.append(client[os.environ["BENCH_MONGODB_DB"]]["jobs"])
        return _jobs[0]


@dramatiq.actor(queue_name=QUEUE, actor_name=QUEUE, max_retries=0)
def run_job(job_id: str) -> None:
    jobs, key = _collection(), {"_id": ObjectId(job_id)}
    jobs.update_one(key, {"$set": {"state": "running", "started_at": datetime.now(UTC)}})
    result = {"ok": True}
    jobs.update_one(key, {"$set": {"state": "completed", "result": result, "finished_at": datetime.now(UTC)}})
    with open(COUNTER, "a", encoding="ascii") as counter:
        counter.write(f"{time.time():.6f}\n")
