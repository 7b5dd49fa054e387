"""A minimal WebSocket client on a bare asyncio Protocol, so the load generator stays cheap.

aiohttp's client costs several times the server's own work per frame and tens of KiB per socket,
which would make the generator the bottleneck at 20k sockets. This one speaks just enough RFC 6455
(masked client frames, ping/pong, close, fragments) and offers permessage-deflate the way browsers
do; when a server accepts it, compressed frames are inflated.
"""

from __future__ import annotations

import asyncio
import base64
import os
import zlib
from collections import deque
from collections.abc import Callable
from typing import cast

__all__ = ["WSClient", "WSClosed", "connect"]

HOST = "127.0.0.1"
BROWSER_EXTENSIONS = "permessage-deflate; client_max_window_bits"
TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


class WSClosed(Exception):
    """The socket closed while a message was awaited; ``code`` is the server's close code."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"closed with {code}")
        self.code = code


class WSClient(asyncio.Protocol):
    """One client socket: ``recv()`` for request/reply, or ``on_text`` to count pushed frames."""

    def __init__(self, port: int, path: str, offer_deflate: bool) -> None:
        loop = asyncio.get_running_loop()
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            + (f"Sec-WebSocket-Extensions: {BROWSER_EXTENSIONS}\r\n" if offer_deflate else "")
            + "\r\n"
        ).encode()
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int | None] = loop.create_future()
        self.deflate = False
        self.on_text: Callable[[WSClient, str], None] | None = None
        self._buffer = bytearray()
        self._upgraded = False
        self._inflater: zlib._Decompress | None = None
        self._fragments: list[bytes] = []
        self._fragment_compressed = False
        self._messages: deque[str] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._close_sent = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio subclass
        self.transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"connection lost before upgrade: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)
        self._wake()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._upgraded and not self._upgrade():
            return
        self._frames()

    def _upgrade(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self._buffer[:end]).decode("latin-1").lower()
        del self._buffer[: end + 4]
        if not head.startswith("http/1.1 101"):
            if not self.opened.done():
                self.opened.set_exception(ConnectionError(head.split("\r\n", 1)[0]))
            assert self.transport is not None
            self.transport.close()
            return False
        self.deflate = "sec-websocket-extensions: permessage-deflate" in head
        self._upgraded = True
        if not self.opened.done():  # not given up on (``connect``'s timeout)
            self.opened.set_result(None)
        return True

    def _frames(self) -> None:
        buf = self._buffer
        while len(buf) >= 2:
            length, offset = buf[1] & 0x7F, 2
            if length == 126:
                if len(buf) < 4:
                    return
                length, offset = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length, offset = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < offset + length:
                return
            first = buf[0]
            payload = bytes(buf[offset : offset + length])
            del buf[: offset + length]
            self._frame(first, payload)

    def _frame(self, first: int, payload: bytes) -> None:
        opcode, fin = first & 0x0F, first & 0x80
        if opcode == PING:
            self._send(PONG, payload)
        elif opcode == CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            if not self._close_sent:
                self._send(CLOSE, payload[:2])
                self._close_sent = True
            if not self.closed.done():
                self.closed.set_result(code)
            assert self.transport is not None
            self.transport.close()
            self._wake()
        elif opcode in (TEXT, 0x0):
            if opcode == TEXT:
                self._fragment_compressed = bool(first & 0x40)
            self._fragments.append(payload)
            if fin:
                self._text(b"".join(self._fragments))
                self._fragments.clear()

    def _text(self, payload: bytes) -> None:
        if self._fragment_compressed:
            if self._inflater is None:
                self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            payload = self._inflater.decompress(payload + b"\x00\x00\xff\xff")
        text = payload.decode()
        if self.on_text is not None:
            self.on_text(self, text)
            return
        self._messages.append(text)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        n = len(payload)
        if n < 126:
            header = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            header = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
        else:
            header = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        keystream = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "little") ^ int.from_bytes(keystream, "little")).to_bytes(
            n, "little"
        )
        self.transport.write(header + mask + masked)

    def send_text(self, text: str) -> None:
        self._send(TEXT, text.encode())

    async def recv(self, within: float = 30) -> str:
        """The next text frame; ``WSClosed`` when the server closed instead."""
        async with asyncio.timeout(within):
            while not self._messages:
                if self.closed.done():
                    raise WSClosed(self.closed.result())
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
        return self._messages.popleft()

    async def close(self, within: float = 10) -> None:
        """Close with 1000 and wait for the server's close frame (or the end of the connection)."""
        if not self._close_sent:
            self._send(CLOSE, (1000).to_bytes(2, "big"))
            self._close_sent = True
        try:
            async with asyncio.timeout(within):
                await asyncio.shield(self.closed)
        finally:
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def connect(port: int, path: str = "/ws", offer_deflate: bool = True) -> WSClient:
    """Open an upgraded socket to 127.0.0.1:``port`` (only loopback is ever targeted)."""
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: WSClient(port, path, offer_deflate), HOST, port
    )
    try:
        async with asyncio.timeout(30):
            await client.opened
    except BaseException:
        client.abort()  # a client that gives up closes its socket, as a browser does
        raise
    return client
