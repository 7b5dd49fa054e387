"""Many concurrent lookups as one round trip: a micro-batcher for calls to a shared store.

A reconnect storm brings thousands of handshakes to one process within a second, each asking Redis
the same kind of question (is this token revoked, may this user hold one more socket). One round
trip each means thousands of commands to pack and replies to parse, and a connection per caller
in flight. :class:`Batcher` gathers the requests made while the event loop runs one iteration and
sends them together; while that batch is out, the requests arriving meanwhile wait and go in the
next one. No timer is involved: alone, a request leaves in the next loop iteration; under load a
batch holds whatever came during one round trip.

Every request of a batch gets the batch's outcome: its share of the results, or the exception the
call raised. A caller that is cancelled leaves the others alone; a request whose callers have all
gone by the time its batch leaves is not sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Batcher"]

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Runs ``call`` on the items of every request made while the previous batch was out (or in
    the same loop iteration), at most ``max_items`` per call; ``call`` returns one result per item,
    in order. ``on_batch`` hears each call's number of items."""

    __slots__ = (
        "_call",
        "_closed",
        "_flush_scheduled",
        "_in_flight",
        "_max_items",
        "_on_batch",
        "_pending",
    )

    def __init__(
        self,
        call: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_items: int = 1024,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._call = call
        self._max_items = max_items
        self._on_batch = on_batch
        self._pending: list[tuple[Sequence[T], asyncio.Future[list[R]]]] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._flush_scheduled = False
        self._closed = False

    async def run(self, items: Sequence[T]) -> list[R]:
        """The results for ``items``, from a batch shared with the requests made meanwhile."""
        if not items:
            return []
        if self._closed:
            raise RuntimeError("the batcher is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[R]] = loop.create_future()
        self._pending.append((items, future))
        if not self._in_flight and not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    async def close(self) -> None:
        """Cancel the requests still waiting and the batches out; nothing is sent after this."""
        self._closed = True
        pending, self._pending = self._pending, []
        for _, future in pending:
            future.cancel()
        for task in list(self._in_flight):
            task.cancel()
        if self._in_flight:
            await asyncio.wait(self._in_flight)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._closed:
            return
        pending = [(items, future) for items, future in self._pending if not future.done()]
        self._pending = []
        loop = asyncio.get_running_loop()
        start = 0
        while start < len(pending):
            end, size = start + 1, len(pending[start][0])
            while end < len(pending) and size + len(pending[end][0]) <= self._max_items:
                size += len(pending[end][0])
                end += 1
            task = loop.create_task(self._send(pending[start:end], size))
            self._in_flight.add(task)
            task.add_done_callback(self._sent)
            start = end

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not self._in_flight and self._pending and not self._flush_scheduled:
            self._flush()

    async def _send(
        self, batch: list[tuple[Sequence[T], asyncio.Future[list[R]]]], size: int
    ) -> None:
        items = [item for request, _ in batch for item in request]
        if self._on_batch is not None:
            self._on_batch(size)
        try:
            results = list(await self._call(items))
            if len(results) != size:
                raise RuntimeError(f"a batch of {size} items got {len(results)} results")
        except BaseException as exc:
            for _, future in batch:
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for request, future in batch:
            end = start + len(request)
            if not future.done():
                future.set_result(results[start:end])
            start = end
