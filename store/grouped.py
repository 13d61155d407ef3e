"""Group commit: calls on one event loop that arrive while a round trip is in flight share the next one.

A worker process runs a job per thread, and each thread's database calls go to one event loop: reads of the jobs
they start and writes of their outcomes arrive together. SecantusDB (and MongoDB) charge far less per document for
one ``find`` over several ids or one ``bulk_write`` than for one command each, so a ``Grouped`` call waits for the
round trip under way, if any, and goes with everyone who arrived meanwhile. A caller alone waits for no timer: an idle
system adds no latency, a busy one sends one command per round trip instead of one per job.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Grouped(Generic[Item, Result]):
    """``await grouped(item)`` runs ``serve`` over ``item`` and whoever waits with it, at most ``most`` at a time.

    ``serve`` answers each item in order (a result, or an exception for that caller alone); if it raises, every caller
    of that group gets the error. Used from one event loop only, so it takes no lock.
    """

    def __init__(
        self, serve: Callable[[list[Item]], Awaitable[Sequence[Result | BaseException]]], *, most: int
    ) -> None:
        self._serve = serve
        self._most = most
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._server: asyncio.Task[None] | None = None

    async def __call__(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Result] = loop.create_future()
        self._waiting.append((item, answer))
        if self._server is None or self._server.done():
            self._server = loop.create_task(self._serve_waiting())
        return await answer

    async def _serve_waiting(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting[: self._most], self._waiting[self._most :]
            try:
                answers = await self._serve([item for item, _ in group])
            except Exception as exc:  # every caller must hear of it: a server that dies silently would hang them
                answers = [exc] * len(group)
            for (_, answer), result in zip(group, answers, strict=True):
                if answer.done():  # its caller was cancelled
                    continue
                if isinstance(result, BaseException):
                    answer.set_exception(result)
                else:
                    answer.set_result(result)
