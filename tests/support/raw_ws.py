"""A WebSocket client over a bare socket, for what client libraries hide: whether the server waits
for our close frame (RFC 6455 section 5.5.1) or drops TCP first, and frame-level misbehaviour."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

__all__ = ["RawWebSocket", "client_frame", "fragmented"]

CONTINUATION, TEXT, CLOSE, PING, PONG = 0x0, 0x1, 0x8, 0x9, 0xA


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    """A client's frame (RFC 6455 section 5.2): masked, as every client frame must be, unless
    ``masked=False``."""
    size = len(payload)
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if masked else 0
    if size < 126:
        header = struct.pack("!BB", first, mask_bit | size)
    elif size < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, size)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def fragmented(text: bytes, frames: int) -> bytes:
    """One text message in ``frames`` frames: all of the text in the first, empty ones after."""
    empty = client_frame(CONTINUATION, b"", fin=False)
    return (
        client_frame(TEXT, text, fin=False) + empty * (frames - 2) + client_frame(CONTINUATION, b"")
    )


class RawWebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls, host: str, port: int, path: str = "/ws", *, slow: bool = False, early: bytes = b""
    ) -> RawWebSocket:
        """``slow``: a 4 KiB receive buffer and stream limit, so the server's writes back up after
        a few KiB the client has not read. ``early``: frames written with the upgrade request, as
        a client that does not wait for the answer sends them."""
        if slow:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        else:
            reader, writer = await asyncio.open_connection(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            + early
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    def send(self, opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> None:
        """One frame; ``fin=False`` for a fragment that more of its message follows."""
        self.writer.write(client_frame(opcode, payload, fin=fin, masked=masked))

    def send_text(self, text: str) -> None:
        self.send(TEXT, text.encode())

    def send_close(self, code: int = 1000) -> None:
        self.send(CLOSE, struct.pack("!H", code))

    async def recv(self) -> tuple[int, bytes]:
        """The next frame's opcode and payload; raises ``IncompleteReadError`` at EOF."""
        first, second = await self.reader.readexactly(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(size)

    async def eof_within(self, seconds: float) -> bool:
        """Whether the server closes TCP within ``seconds`` (reading and dropping any frames)."""
        try:
            async with asyncio.timeout(seconds):
                while await self.reader.read(4096):
                    pass
        except TimeoutError:
            return False
        return True

    def abort(self) -> None:
        self.writer.close()
