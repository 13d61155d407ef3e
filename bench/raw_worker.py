"""Entry module of the raw Dramatiq baseline's worker: ``dramatiq bench.raw_worker --queues <queue>``.

One no-op actor on the queue named by ``BENCH_RAW_QUEUE``. Each message appends its finish time (Unix
seconds) as one line to ``BENCH_RAW_COUNTER``; the benchmark waits for as many lines as it sent messages. A message
sent with its enqueue time as argument (the latency benchmark) appends that time too, after a space, so the line
alone gives the message's enqueue-to-start latency whatever order the threads run in.
Appends of one short line with ``O_APPEND`` are atomic, so threads and processes need no lock.
"""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from engineroom.messaging.broker import MAX_PRIORITY

QUEUE = os.environ["BENCH_RAW_QUEUE"]
COUNTER = os.environ["BENCH_RAW_COUNTER"]

# Same queue arguments (x-max-priority) as engineroom's queues, so only the work per message differs.
broker = RabbitmqBroker(url=os.environ["BENCH_AMQP_URL"], max_priority=MAX_PRIORITY)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, actor_name=QUEUE, max_retries=0)
def noop(sent_at: float | None = None) -> None:
    now = time.time()
    with open(COUNTER, "a", encoding="ascii") as counter:
        counter.write(f"{now:.6f}\n" if sent_at is None else f"{now:.6f} {sent_at:.6f}\n")
