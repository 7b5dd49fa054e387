"""The aiohttp side of a connection: a byte-bounded outbox drained by a short-lived writer task,
and the RFC 6455 closing handshake done from the handler's own task.

Uncompressed ``send_str`` writes to the transport at once and only waits when the peer stops
reading, so a broadcast loop only appends here and a slow client can stall nobody but itself. A
client whose outbox grows past ``max_outbox_bytes`` is dropped (1013 ``slow_consumer``).

Closing: aiohttp's ``WebSocketResponse.close()`` called from another task while the handler waits
in ``receive()`` sends the close frame and then closes TCP at once, without waiting for the
peer's close frame, and the peer then often reads a reset (1006) instead of the code. So the
writer only queues the close: it wakes the handler's ``receive()`` (a cancellation caught in
:meth:`receive`), and the handler calls ``close()`` itself, which waits up to the socket's close
timeout for the peer's close frame before closing TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from aiohttp import WSMessage, web

from shared.close_codes import Disconnect

__all__ = ["WebSocketPeer"]


class _Close(NamedTuple):
    code: int
    reason: str


class WebSocketPeer:
    __slots__ = (
        "__weakref__",
        "_close",
        "_closing",
        "_done",
        "_finished",
        "_max_bytes",
        "_on_overflow",
        "_outbox",
        "_queued",
        "_reader",
        "_writer",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        max_outbox_bytes: int,
        on_overflow: Callable[[], None] | None = None,
    ) -> None:
        self.ws = ws
        self._max_bytes = max_outbox_bytes
        self._on_overflow = on_overflow
        # Allocated while frames wait and dropped once drained: an idle socket holds no queue (a
        # deque is 760 bytes, a fifth of what a socket costs beyond aiohttp's own state).
        self._outbox: deque[str | _Close] | None = None
        self._queued = 0
        self._writer: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[object] | None = None
        self._close: _Close | None = None
        self._closing = False
        self._finished = False
        self._done: asyncio.Event | None = None  # made only if someone waits (shutdown)

    @property
    def queued_bytes(self) -> int:
        return self._queued

    # -- the Peer protocol (called by the connection, from any task) ---------------------------

    def send(self, text: str) -> None:
        """Queue one frame; frames are ASCII JSON, so characters are bytes."""
        if self._closing:
            return
        if self._queued + len(text) > self._max_bytes:
            self._outbox = None
            self._queued = 0
            if self._on_overflow is not None:
                self._on_overflow()
            self.close(Disconnect.SLOW_CONSUMER.code, Disconnect.SLOW_CONSUMER.reason)
            return
        self._queued += len(text)
        self._queue().append(text)
        self._start_writer()

    def close(self, code: int, reason: str) -> None:
        """Queue the close after the frames already queued."""
        if self._closing:
            return
        self._closing = True
        self._queue().append(_Close(code, reason))
        self._start_writer()

    # -- the handler's side ------------------------------------------------------------------

    async def receive(self) -> WSMessage | None:
        """The next message, or None once this side asked to close (then call :meth:`finish`).

        Only the handler's task calls this."""
        if self._close is not None:
            return None
        task = asyncio.current_task()
        assert task is not None
        self._reader = task
        try:
            return await self.ws.receive()
        except asyncio.CancelledError:
            if self._close is None:
                raise
            task.uncancel()
            return None
        finally:
            self._reader = None

    async def finish(self, grace: float) -> None:
        """Let queued frames go out for at most ``grace`` seconds, then complete a requested
        close handshake (bounded by the socket's close timeout)."""
        self._closing = True
        if self._writer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._writer, grace)
        if self._close is not None and not self.ws.closed:
            await self.ws.close(code=self._close.code, message=self._close.reason.encode())
        self._finished = True
        if self._done is not None:
            self._done.set()

    async def wait_finished(self) -> None:
        if self._finished:
            return
        if self._done is None:
            self._done = asyncio.Event()
        await self._done.wait()

    # -- the writer task -----------------------------------------------------------------------

    def _queue(self) -> deque[str | _Close]:
        if self._outbox is None:
            self._outbox = deque()
        return self._outbox

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        try:
            while self._outbox:
                item = self._outbox.popleft()
                if isinstance(item, str):
                    self._queued -= len(item)
                    await self.ws.send_str(item)
                else:
                    self._outbox = None
                    self._queued = 0
                    self._close = item
                    if self._reader is not None:
                        self._reader.cancel()
        except ConnectionError:
            self._outbox = None
            self._queued = 0
        finally:
            self._writer = None
            if not self._outbox:
                self._outbox = None
