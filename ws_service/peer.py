"""The aiohttp side of a connection: a byte-bounded outbox drained by a short-lived writer task,
and the RFC 6455 closing handshake done from the handler's own task.

Uncompressed ``send_str`` writes to the transport at once and only waits when the peer stops
reading. So a frame for a socket with nothing queued and an empty transport buffer is written at
once, in the caller's step, as the frame's bytes in one transport write (no task: a broadcast to
10k sockets would otherwise start 10k; and no coroutine: the broadcast's frame is encoded once for
all its subscribers, :func:`text_frame`); any other frame is appended to the outbox, which a writer task drains, and a slow client can stall
nobody but itself. A client whose outbox grows past ``max_outbox_bytes`` is dropped (1013
``slow_consumer``).

Closing: aiohttp's ``WebSocketResponse.close()`` called from another task while the handler waits
in ``receive()`` sends the close frame and then closes TCP at once, without waiting for the
peer's close frame, and the peer then often reads a reset (1006) instead of the code. So the
writer only queues the close: it wakes the handler's ``receive()`` (it cancels the task named in
``reader`` while that task waits there), and the handler calls ``close()`` itself, which waits up
to the socket's close timeout for the peer's close frame before closing TCP. The handler awaits
``ws.receive()`` itself rather than through a method here: a coroutine frame per idle socket is
about 200 bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import struct
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from aiohttp import WebSocketError, WSMessage, WSMsgType, web

from realtime_gateway_protocol.close_codes import Disconnect
from shared.http.access import SessionEnd
from shared.http.resets import reset

__all__ = ["WebSocketPeer", "text_frame"]


_FINAL_TEXT = 0x81  # FIN, opcode 1 (text)
_FINAL_PONG = 0x8A  # FIN, opcode 10 (pong)
_HEADER_SHORT = struct.Struct("!BB")
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")


class _Close(NamedTuple):
    code: int
    reason: str


def _pong_frame(data: bytes) -> bytes:
    """A server's pong: final, opcode 10, unmasked, its payload under 126 bytes."""
    return _HEADER_SHORT.pack(_FINAL_PONG, len(data)) + data


@functools.lru_cache(maxsize=1)
def text_frame(text: str) -> bytes:
    """``text`` as a server's WebSocket frame (RFC 6455 section 5.2: final, text, unmasked), the
    bytes aiohttp's writer would send. The last one is kept: the subscribers of a broadcast are
    handed the same string one after the other (a string keeps its hash, and the lookup of the
    same object compares identities), so 10,000 deliveries encode it once."""
    payload = text.encode("utf-8")
    size = len(payload)
    if size < 126:
        return _HEADER_SHORT.pack(_FINAL_TEXT, size) + payload
    if size < 1 << 16:
        return _HEADER_16.pack(_FINAL_TEXT, 126, size) + payload
    return _HEADER_64.pack(_FINAL_TEXT, 127, size) + payload


class WebSocketPeer:
    __slots__ = (
        "_asked",
        "_close",
        "_closing",
        "_done",
        "_finished",
        "_grace",
        "_max_bytes",
        "_on_overflow",
        "_outbox",
        "_queued",
        "_transport",
        "_writer",
        "reader",
        "sent",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        max_outbox_bytes: int,
        on_overflow: Callable[[], None] | None = None,
        grace: float = 5.0,
    ) -> None:
        self.ws = ws
        self._transport = transport
        self._max_bytes = max_outbox_bytes
        self._grace = grace
        """How long a close may wait behind frames queued before it (the close timeout)."""
        self._on_overflow = on_overflow
        # Allocated while frames wait and dropped once drained: an idle socket holds no queue (a
        # deque is 760 bytes, a fifth of what a socket costs beyond aiohttp's own state).
        self._outbox: deque[str | _Close] | None = None
        self._queued = 0
        self._writer: asyncio.Task[None] | None = None
        # The handler's task while it waits in ``ws.receive()``: cancelled to wake it for a close.
        self.reader: asyncio.Task[object] | None = None
        self._close: _Close | None = None
        self._asked: _Close | None = None
        self._closing = False
        self._finished = False
        self._done: asyncio.Event | None = None  # made only if someone waits (shutdown)
        self.sent = 0
        """Frames written or queued, for the session's access line."""

    @property
    def queued_bytes(self) -> int:
        return self._queued

    # -- the Peer protocol (called by the connection, from any task) ---------------------------

    def send(self, text: str) -> None:
        """Queue one frame; frames are ASCII JSON, so characters are bytes."""
        if self._closing:
            return
        if self._outbox is None and self._writer is None and self._write_now(text):
            self.sent += 1
            return
        if self._queued + self._buffered() + len(text) > self._max_bytes:
            self._outbox = None
            self._queued = 0
            if self._on_overflow is not None:
                self._on_overflow()
            if not self._closing:
                self._closing = True
                self._asked = _Close(Disconnect.SLOW_CONSUMER.code, Disconnect.SLOW_CONSUMER.reason)
                self._force(self._asked)
            return
        self._queued += len(text)
        self._queue().append(text)
        self.sent += 1
        self._start_writer()

    @property
    def server_close(self) -> tuple[int, str] | None:
        """The close this side asked for, if any (whoever asked: the connection, a drain, a
        shutdown, a full outbox), for the ``disconnect`` webhook."""
        return self._asked

    def close(self, code: int, reason: str) -> None:
        """Queue the close after the frames already queued, for at most the grace: a writer
        waiting for a peer that stopped reading would hold it there for good (a revoked
        session's socket stayed open while its client sent pings)."""
        if self._closing:
            return
        self._closing = True
        close = _Close(code, reason)
        self._asked = close
        if self._writer is not None:
            asyncio.get_running_loop().call_later(self._grace, self._force, close)
        self._queue().append(close)
        self._start_writer()

    def _force(self, close: _Close) -> None:
        """Close now, dropping what is queued, and wake the reader to end the session. A writer
        still waiting for a drain is left to :meth:`finish`, which resets the connection under
        it (cancelled, it would cancel aiohttp's one drain waiter, which the close frame's own
        send then awaits)."""
        if self._close is not None:
            return
        self._outbox = None
        self._queued = 0
        self._close = close
        if self.reader is not None:
            self.reader.cancel()

    # -- the handler's side ------------------------------------------------------------------

    @property
    def close_requested(self) -> bool:
        """This side asked to close: stop reading and call :meth:`finish`. A cancellation of the
        reader that arrives with this set is that request, not a shutdown."""
        return self._close is not None

    async def finish(self, grace: float) -> None:
        """Let queued frames go out for at most ``grace`` seconds, then complete a requested
        close handshake (bounded by the socket's close timeout: aiohttp's ``close`` first waits,
        without a bound, for the transport to drain, which a peer that stopped reading never
        lets happen). Whatever the peer has still not read is then dropped with the connection:
        a graceful TCP close would keep it, and the connection, alive after the handler has
        returned and released the user's slot."""
        self._closing = True
        # Forced past a writer that still waits for a drain: the peer takes nothing, so neither
        # the queued frames nor a close frame can go out; the reset below ends both.
        stuck = self._writer is not None and self._close is not None
        try:
            if self._writer is not None and not stuck:
                await asyncio.wait((self._writer,), timeout=grace)  # not cancelled: see _force
            if self._close is not None and not self.ws.closed and not stuck:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.ws.close(code=self._close.code, message=self._close.reason.encode()),
                        grace,
                    )
        finally:  # cancelled too (aiohttp cancels the handler when the connection is lost)
            if stuck or self._buffered():
                assert self._transport is not None
                reset(self._transport)
            self._finished = True
            if self._done is not None:
                self._done.set()

    def session_end(self, last: WSMessage | None, frames_in: int) -> SessionEnd:
        """How the session ended, for its access line: the code and reason of the side that closed
        first (this side's, else the client's close frame, ``last``, the handler's last message).
        A frame that broke RFC 6455 is this side's close with the error's code: the code the
        client then closes with (or 1006 when it just drops) is only its reply."""
        sent = self.sent
        if self._close is not None:
            return SessionEnd(self._close.code, self._close.reason, frames_in, sent, "server")
        code, reason, by = self.ws.close_code, "", "lost"
        if last is not None and last.type is WSMsgType.CLOSE:
            reason, by = str(last.extra or ""), "client"
        elif last is not None and last.type is WSMsgType.ERROR:
            reason = str(last.data)
            if isinstance(last.data, WebSocketError):
                code, by = last.data.code, "server"
        return SessionEnd(code, reason, frames_in, sent, by)

    async def wait_finished(self) -> None:
        if self._finished:
            return
        if self._done is None:
            self._done = asyncio.Event()
        await self._done.wait()

    # -- writing ---------------------------------------------------------------------------------

    def pong(self, data: bytes) -> None:
        """Answer a ping in this step, never waiting for a drain: aiohttp's ``pong`` does, and a
        client that pings but never reads held the handler there for good, where no close could
        wake it. A ping's payload is at most 125 bytes (aiohttp's reader refuses more), and the
        pre-auth and control-frame budget bounds how many there are."""
        transport = self._transport
        if (
            self._close is None
            and transport is not None
            and not transport.is_closing()
            and not self.ws.closed
        ):
            transport.write(_pong_frame(data))

    def _write_now(self, text: str) -> bool:
        """Write ``text`` in this step if that cannot wait; False when it must be queued.

        The frame goes to the transport as one write, as aiohttp's uncompressed ``send_frame``
        writes it, without the two coroutines that call costs per frame: what is written at once
        never waits for a drain (the transport's buffer is empty), and a broadcast hands every
        subscriber the same string, so :func:`text_frame` encodes it once for all of them. Once
        aiohttp has begun the closing handshake (``ws.closed``: set before its close frame is
        written) the frame is dropped, as ``send_frame`` drops it, since nothing may follow a
        close frame."""
        transport = self._transport
        if transport is None or transport.is_closing() or transport.get_write_buffer_size():
            return False
        if not self.ws.closed:
            transport.write(text_frame(text))
        return True

    def _buffered(self) -> int:
        """Bytes written but not yet taken by the kernel: the outbox's limit counts them too, or
        one large frame written at once would sit there beside a full outbox."""
        transport = self._transport
        return 0 if transport is None else transport.get_write_buffer_size()

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
                    if self.reader is not None:
                        self.reader.cancel()
        except ConnectionError:
            self._outbox = None
            self._queued = 0
        finally:
            self._writer = None
            if not self._outbox:
                self._outbox = None
