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

A batch submit's jobs carry no flag of their own: one outbox record (``store.outbox``) answers for all of them, written
before them and deleted once every message is sent (``hold``, ``dispatch_many(batch=...)``), so a batch costs two
small writes where it cost a clear of each job document still waiting — as much SecantusDB CPU as storing the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import cast

from engineroom.core.clock import utcnow
from engineroom.core.errors import BrokerUnavailable, StoreUnavailable
from engineroom.core.ids import new_id
from engineroom.messaging.broker import Enqueuer
from engineroom.models.job import JobDocument, JobState
from engineroom.store.client import Database
from engineroom.store.jobs import JobStore
from engineroom.store.outbox import OutboxRecord, OutboxStore

logger = logging.getLogger(__name__)

#: Seconds between batched outbox clears; well under the scheduler's ``dispatch_grace_s`` (5 s by default), after
#: which it would send a flagged job again.
CONFIRM_INTERVAL_S = 1.0


class Dispatcher:
    def __init__(self, jobs: JobStore, enqueuer: Enqueuer) -> None:
        self.jobs = jobs
        self.enqueuer = enqueuer
        self.outbox = OutboxStore(cast("Database", jobs.collection.database))
        #: Jobs sent and not yet cleared, each with the token of the flag its message answers.
        self._sent: dict[str, str | None] = {}
        #: Outbox records of batches whose every message was sent, not yet deleted.
        self._closing: set[str] = set()
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

    async def hold(self, jobs: list[JobDocument]) -> tuple[list[JobDocument], str | None]:
        """Before a batch is stored: its queued jobs, under one new token and without flags of their
        own, go in one outbox record; returns the jobs to store and the record's token (None: nothing is queued).

        Raises:
          StoreUnavailable: the record was not written; store nothing.
        """
        queued = [job.id for job in jobs if job.state == JobState.QUEUED]
        if not queued:
            return jobs, None
        token = new_id()
        await self.outbox.open(OutboxRecord(token=token, job_ids=queued, at=utcnow()))
        held = [job.in_batch(token) if job.state == JobState.QUEUED else job for job in jobs]
        return held, token

    async def dispatch_many(self, jobs: list[JobDocument], *, batch: str | None = None) -> int:
        """Send many jobs' messages in one thread hop; how many were sent (the first ones, in order: a failure stops
        the rest). Those not sent keep their flag, or with ``batch`` (``hold``'s token) their batch's outbox record,
        for the scheduler."""
        sent = set(await self.enqueuer.enqueue_many(jobs))
        if len(sent) < len(jobs):
            logger.warning("%d jobs stored but not sent; the scheduler will send them", len(jobs) - len(sent))
        if batch is None:
            self._confirm_soon([job for job in jobs if job.id in sent])
        elif len(sent) == len(jobs):
            self._closing.add(batch)
            self._flush_later()
        return len(sent)

    async def send_overdue_batches(self, opened_before: datetime, limit: int) -> bool:
        """Send the jobs of outbox records opened before ``opened_before`` that still wait for their message (their
        sender died, or RabbitMQ was down); False if RabbitMQ still refuses."""
        for record in await self.outbox.overdue(opened_before, limit):
            unsent = await self.jobs.unsent_of_batch(record.job_ids, record.token)
            logger.info("sending %d job(s) of a batch whose messages are in doubt", len(unsent))
            if await self.dispatch_many(unsent, batch=record.token) < len(unsent):
                return False
        return True

    def _confirm_soon(self, jobs: list[JobDocument]) -> None:
        self._sent.update((job.id, job.dispatch_token) for job in jobs)
        self._flush_later()

    def _flush_later(self) -> None:
        if (self._sent or self._closing) and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        # Jobs sent while a flush awaits MongoDB land in the next batch: loop until none is left, so that no
        # job keeps its flag (and gets sent again by the scheduler) for want of a flusher.
        while self._sent or self._closing:
            await asyncio.sleep(CONFIRM_INTERVAL_S)
            await self.flush()

    async def flush(self) -> None:
        """Clear the flags of every job sent so far, and delete the outbox records of batches sent whole."""
        sent, self._sent = self._sent, {}
        closing, self._closing = self._closing, set()
        try:
            await self.jobs.confirm_dispatched(sent)
        except StoreUnavailable:
            logger.warning("could not clear the outbox flag of %d jobs; they may be sent twice (harmless)", len(sent))
        try:
            await self.outbox.close(closing)
        except StoreUnavailable:
            logger.warning("could not delete %d outbox records; their jobs may be sent twice (harmless)", len(closing))

    async def close(self) -> None:
        """Clear the flags of every job sent so far, at once. The pending flush is cancelled rather than awaited: it
        may be waiting on a MongoDB that stopped answering, without the caller's bound (``store.client.bounded``)."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()
