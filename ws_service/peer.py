"""The aiohttp side of a connection: a bounded outbox drained by a short-lived writer task.

Uncompressed ``send_str`` writes to the transport at once and only waits when the peer stops
reading, so a broadcast loop only appends here and a slow client can stall nobody but itself. A
client whose outbox overflows is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import NamedTuple

from aiohttp import web

from shared.close_codes import Disconnect

__all__ = ["WebSocketPeer"]


class _Close(NamedTuple):
    code: int
    reason: str


class WebSocketPeer:
    __slots__ = ("_closing", "_max_outbox", "_outbox", "_writer", "ws")

    def __init__(self, ws: web.WebSocketResponse, max_outbox: int) -> None:
        self.ws = ws
        self._max_outbox = max_outbox
        self._outbox: deque[str | _Close] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False

    def send(self, text: str) -> None:
        if self._closing:
            return
        if len(self._outbox) >= self._max_outbox:
            self._outbox.clear()
            self.close(Disconnect.SLOW_CONSUMER.code, Disconnect.SLOW_CONSUMER.reason)
            return
        self._outbox.append(text)
        self._start_writer()

    def close(self, code: int, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        self._outbox.append(_Close(code, reason))
        self._start_writer()

    async def finish(self, grace: float) -> None:
        """Let queued frames and a requested close go out, for at most ``grace`` seconds."""
        self._closing = True
        if self._writer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._writer, grace)

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        try:
            while self._outbox:
                item = self._outbox.popleft()
                if isinstance(item, str):
                    await self.ws.send_str(item)
                else:
                    self._outbox.clear()
                    await self.ws.close(code=item.code, message=item.reason.encode())
        except ConnectionError:
            self._outbox.clear()
        finally:
            self._writer = None
