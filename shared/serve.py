"""Run one or more aiohttp apps until SIGINT/SIGTERM, on uvloop when it is installed.

aiohttp's default listen backlog (128) overflows under a burst of connects and stalls clients
for a full second, so every site listens with a backlog of 1024.

Every site also gets an HTTP timeout (aiohttp's ``keepalive_timeout``, which since 3.10 also runs
from the moment a connection opens: a client that does not finish its request headers in time,
dribbles them, or sits idle between requests is dropped), and answers requests that aiohttp's
parser refuses (bad header line, oversized URL, obs-fold...) with the JSON error every other
refusal uses, logged in one line instead of a traceback per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import ssl
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from shared.http_errors import json_error

__all__ = [
    "LISTEN_BACKLOG",
    "CannotListen",
    "JsonErrorRequestHandler",
    "Site",
    "run",
    "serve",
    "start_site",
]

LISTEN_BACKLOG = 1024

log = logging.getLogger(__name__)

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
    http_timeout: float = 15.0
    """Seconds a client may take to send its request headers, or stay idle between requests."""


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering what it cannot parse as JSON."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the response has started; the connection is dropped")
        if status >= 500:
            self.log_exception("request failed outside the application", exc_info=exc)
            response = json_error(status, "server_error", "internal error")
        else:
            log.info(
                "malformed HTTP request refused",
                extra={"status": status, "error": type(exc).__name__, "remote": request.remote},
            )
            response = json_error(status, "bad_request", "the request is not valid HTTP/1.1")
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        handler = super().__call__()
        # aiohttp has no setting for the connection handler's class: the subclass adds no state.
        handler.__class__ = JsonErrorRequestHandler
        return handler


async def start_site(site: Site) -> tuple[web.AppRunner, int]:
    """Set up and start one site; returns its runner (to clean up) and the port it listens on."""
    runner = web.AppRunner(
        site.app,
        access_log=None,
        shutdown_timeout=site.shutdown_timeout,
        keepalive_timeout=site.http_timeout,
    )
    await runner.setup()
    assert runner.server is not None
    runner.server.__class__ = _JsonErrorServer
    tcp = web.TCPSite(
        runner, site.host, site.port, ssl_context=site.ssl_context, backlog=LISTEN_BACKLOG
    )
    try:
        await tcp.start()
    except OSError as exc:
        await runner.cleanup()
        raise CannotListen(site.host, site.port, exc) from exc
    port: int = runner.addresses[0][1]
    return runner, port


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
            runner, _ = await start_site(site)
            runners.append(runner)
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
