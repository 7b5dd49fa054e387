"""Run one or more aiohttp apps until SIGINT/SIGTERM, on uvloop when it is installed.

aiohttp's default listen backlog (128) overflows under a burst of connects and stalls clients
for a full second, so every site listens with a backlog of 1024.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

__all__ = ["LISTEN_BACKLOG", "Site", "run", "serve"]

LISTEN_BACKLOG = 1024


@dataclass(frozen=True)
class Site:
    app: web.Application
    host: str
    port: int
    ssl_context: ssl.SSLContext | None = None
    shutdown_timeout: float = 10.0


async def serve(sites: Sequence[Site], *, on_started: Callable[[], None] | None = None) -> None:
    """Start every site, wait for a stop signal, then clean up in reverse order."""
    runners: list[web.AppRunner] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        for site in sites:
            runner = web.AppRunner(
                site.app, access_log=None, shutdown_timeout=site.shutdown_timeout
            )
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(
                runner,
                site.host,
                site.port,
                ssl_context=site.ssl_context,
                backlog=LISTEN_BACKLOG,
            ).start()
        if on_started is not None:
            on_started()
        await stop.wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


def run(sites: Sequence[Site], *, on_started: Callable[[], None] | None = None) -> None:
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(sites, on_started=on_started))
