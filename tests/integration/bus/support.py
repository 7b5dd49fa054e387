"""Helpers for the Redis bus tests: an awaitable inbox, a private redis-server, a bounded poll."""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from redis.asyncio import Redis

from shared.redis.bus import RedisBus
from tests.services import free_port

BusMaker = Callable[..., Awaitable[RedisBus]]
DELIVERY_WAIT = 5.0
"""Seconds a test waits for a message before it fails; a liveness bound, not a performance claim."""


async def command_calls(url: str) -> dict[str, int]:
    """Calls per command the server at ``url`` has run since its counters were last reset
    (``INFO commandstats``; subcommands read ``script|load``)."""
    client = Redis.from_url(url, decode_responses=True)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()}


class Inbox:
    """A bus handler that queues what it receives, so a test can await the next message."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def __call__(self, topic: str, payload: str) -> None:
        self.queue.put_nowait((topic, payload))

    async def next(self) -> tuple[str, str]:
        async with asyncio.timeout(DELIVERY_WAIT):
            return await self.queue.get()


class PrivateRedis:
    """A redis-server of this test alone, on its own port, that the test may kill and restart."""

    def __init__(self, binary: str, *options: str) -> None:
        self.binary = binary
        self.options = options
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: asyncio.subprocess.Process | None = None
        # A replica writes the RDB its master sends even with --save "": into a directory of its
        # own, never the checkout (a dump.rdb once landed in the repository that way).
        self.workdir = Path(tempfile.mkdtemp(prefix="private-redis-"))

    async def start(self) -> None:
        self.workdir.mkdir(exist_ok=True)
        self._process = await asyncio.create_subprocess_exec(
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            *self.options,
            stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        async with asyncio.timeout(10):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    await asyncio.sleep(0.02)
                    continue
                writer.close()
                await writer.wait_closed()
                return

    def pause(self) -> None:
        """Freeze the server: connections stay open but nothing answers, like a network cut."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    async def kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


async def eventually(predicate: Callable[[], bool]) -> None:
    """Poll a state that no event announces, for at most about ten seconds."""
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition still false after 10 s")
