"""The outbox: a job moves to ``queued`` flagged for sending, its message is sent, then the flag is cleared.

If RabbitMQ is down the flag stays and the scheduler sends the message later; if this process dies between
send and clear, the scheduler sends it again and the duplicate is harmless (workers only run ``queued`` jobs,
claiming them with a conditional write). A clear names the token of the flag it answers: a flag set
again since (a parked job released anew, a retry) is not wiped by the clear of an earlier send, whatever the
process — else a job whose new send failed would wait, queued, with no message, for good (seen when RabbitMQ
restarted under load: the gateway's clear of a submit landed after the scheduler re-flagged the job, released from
parking, whose send had just failed). Clears are batched (one ``update_many`` for many jobs) and late: a worker's
claim clears the flag too, so a job claimed within ``CONFIRM_INTERVAL_S`` needs no clear of its own — with
MongoDB maintaining every index of a job on each write, that is one write fewer per job when workers keep up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from engineroom.core.errors import BrokerUnavailable, StoreUnavailable
from engineroom.messaging.broker import Enqueuer
from engineroom.models.job import JobDocument
from engineroom.store.jobs import JobStore

logger = logging.getLogger(__name__)

#: Seconds between batched outbox clears; well under the scheduler's ``dispatch_grace_s`` (5 s by default), after
#: which it would send a flagged job again.
CONFIRM_INTERVAL_S = 1.0


class Dispatcher:
    def __init__(self, jobs: JobStore, enqueuer: Enqueuer) -> None:
        self.jobs = jobs
        self.enqueuer = enqueuer
        #: Jobs sent and not yet cleared, each with the token of the flag its message answers.
        self._sent: dict[str, str | None] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def dispatch(self, job: JobDocument) -> bool:
        """Send the job's message; False (and the flag left set for the scheduler) if RabbitMQ is unreachable."""
        try:
            await self.enqueuer.enqueue(job)
        except BrokerUnavailable:
            logger.warning("job %s stored but not sent; the scheduler will send it when RabbitMQ is back", job.id)
            return False
        self._confirm_soon([job])
        return True

    async def dispatch_many(self, jobs: list[JobDocument]) -> int:
        """Send many jobs' messages in one thread hop; how many were sent (the first ones, in order: a failure stops
        the rest). Those not sent keep their flag for the scheduler."""
        sent = set(await self.enqueuer.enqueue_many(jobs))
        if len(sent) < len(jobs):
            logger.warning("%d jobs stored but not sent; the scheduler will send them", len(jobs) - len(sent))
        self._confirm_soon([job for job in jobs if job.id in sent])
        return len(sent)

    def _confirm_soon(self, jobs: list[JobDocument]) -> None:
        self._sent.update((job.id, job.dispatch_token) for job in jobs)
        if self._sent and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        # Jobs sent while a flush awaits MongoDB land in the next batch: loop until none is left, so that no
        # job keeps its flag (and gets sent again by the scheduler) for want of a flusher.
        while self._sent:
            await asyncio.sleep(CONFIRM_INTERVAL_S)
            await self.flush()

    async def flush(self) -> None:
        """Clear the flags of every job sent so far."""
        sent, self._sent = self._sent, {}
        try:
            await self.jobs.confirm_dispatched(sent)
        except StoreUnavailable:
            logger.warning("could not clear the outbox flag of %d jobs; they may be sent twice (harmless)", len(sent))

    async def close(self) -> None:
        """Clear the flags of every job sent so far, at once. The pending flush is cancelled rather than awaited: it
        may be waiting on a MongoDB that stopped answering, without the caller's bound (``store.client.bounded``)."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()
