"""A TCP proxy between a client and a real Redis that can hold Redis's replies back, and counts
the bytes of those it lets through.

Commands pass at once, so Redis runs them; a held reply never reaches the client, which times out
not knowing whether its command ran: what a stalled network or an overloaded Redis looks like to a
client that has just sent a write. The tests of every write that must not be applied twice run
through it.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.services import free_port

__all__ = ["DelayingProxy"]


class DelayingProxy:
    """Listens on a free loopback port and forwards each connection to ``upstream_port``."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.held = 0
        self.reply_bytes = 0
        """Bytes forwarded from Redis to the clients so far."""
        self._to_hold = 0
        self._holding = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self._ends: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    def hold_replies(self, count: int) -> None:
        """Hold the next ``count`` reads from Redis (one reply each on a connection that sent one
        command), on whichever connections they come; each is dropped when its client gives up."""
        self._to_hold = count
        self._holding = asyncio.Event()

    async def wait_holding(self) -> None:
        """Return once a reply is being held: the command it answers has run."""
        await self._holding.wait()

    async def close(self) -> None:
        """Stop listening and close every connection (each then ends by itself)."""
        if self._server is not None:
            self._server.close()
        for end in self._ends:
            end.close()
        if self._pumps:
            await asyncio.wait(self._pumps)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pumps.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except OSError:
            writer.close()
            self._pumps.discard(task)
            return
        self._ends |= {writer, up_writer}
        client_gone = asyncio.Event()
        commands = asyncio.create_task(self._commands(reader, up_writer, client_gone))
        try:
            await self._replies(up_reader, writer, client_gone)
        finally:
            writer.close()
            up_writer.close()
            await asyncio.wait([commands])
            self._ends -= {writer, up_writer}
            self._pumps.discard(task)
            with contextlib.suppress(OSError):
                await writer.wait_closed()
                await up_writer.wait_closed()

    async def _commands(
        self, reader: asyncio.StreamReader, up: asyncio.StreamWriter, client_gone: asyncio.Event
    ) -> None:
        try:
            while data := await reader.read(65536):
                up.write(data)
                await up.drain()
        except OSError:
            pass
        finally:
            client_gone.set()
            up.close()

    async def _replies(
        self, up: asyncio.StreamReader, writer: asyncio.StreamWriter, client_gone: asyncio.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await up.read(65536):
                if self._to_hold > 0:
                    self._to_hold -= 1
                    self.held += 1
                    self._holding.set()
                    await client_gone.wait()
                    return
                self.reply_bytes += len(data)
                writer.write(data)
                await writer.drain()
