"""Run one or more aiohttp apps until SIGINT/SIGTERM, on uvloop when it is installed.

aiohttp's default listen backlog (128) overflows under a burst of connects and stalls clients
for a full second, so every site listens with a backlog of 1024.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import ssl
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = ["LISTEN_BACKLOG", "CannotListen", "Site", "run", "serve"]

LISTEN_BACKLOG = 1024

OnStarted = Callable[[], Coroutine[Any, Any, None]]
"""Run as a task once every site listens (say so, wait for readiness); cancelled on stop."""


class CannotListen(Exception):
    """A site could not bind its address; the message is one line for the operator."""

    def __init__(self, host: str, port: int, exc: OSError) -> None:
        in_use = exc.errno == errno.EADDRINUSE
        reason = "is already in use" if in_use else f"cannot be opened: {exc.strerror or exc}"
        super().__init__(f"{host}:{port} {reason}")
        self.in_use = in_use


@dataclass(frozen=True)
class Site:
    app: web.Application
    host: str
    port: int
    ssl_context: ssl.SSLContext | None = None
    shutdown_timeout: float = 10.0


async def serve(sites: Sequence[Site], *, on_started: OnStarted | None = None) -> None:
    """Start every site, wait for a stop signal, then clean up in reverse order."""
    runners: list[web.AppRunner] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    started: asyncio.Task[None] | None = None
    try:
        for site in sites:
            runner = web.AppRunner(
                site.app, access_log=None, shutdown_timeout=site.shutdown_timeout
            )
            await runner.setup()
            runners.append(runner)
            try:
                await web.TCPSite(
                    runner,
                    site.host,
                    site.port,
                    ssl_context=site.ssl_context,
                    backlog=LISTEN_BACKLOG,
                ).start()
            except OSError as exc:
                raise CannotListen(site.host, site.port, exc) from exc
        if on_started is not None:
            started = loop.create_task(on_started())
        await stop.wait()
    finally:
        if started is not None:
            started.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await started
        for runner in reversed(runners):
            await runner.cleanup()


def run(sites: Sequence[Site], *, on_started: OnStarted | None = None) -> None:
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(sites, on_started=on_started))
