"""Run one or more aiohttp apps until SIGINT/SIGTERM, on uvloop when it is installed; or N forked
worker processes sharing each port through ``SO_REUSEPORT``, under a supervising parent.

aiohttp's default listen backlog (128) overflows under a burst of connects: the kernel drops the
attempts it cannot queue, and each client's TCP retries only after 1 s, then 3 s. Every site asks
for the deepest queue the kernel allows (``net.core.somaxconn`` caps it: 4096 by default), and an
:class:`~shared.http.acceptor.Acceptor` empties it whenever the loop is too busy to.

On SIGTERM an app that registered a :class:`Drain` under ``DRAIN`` is drained before it stops:
its readiness goes false, its site stops listening, and it closes its connections its own way
(ws_service spreads its sockets' closes over ``WS_DRAIN_SECONDS``); a second signal cuts the drain
short. SIGINT (Ctrl+C) stops at once, as a developer expects.

Every site also gets an HTTP timeout (aiohttp's ``keepalive_timeout``, which since 3.10 also runs
from the moment a connection opens: a client that does not finish its request headers in time,
dribbles them, or sits idle between requests is dropped), and answers requests that aiohttp's
parser refuses (bad header line, oversized URL, obs-fold...) with the JSON error every other
refusal uses, logged in one line instead of a traceback per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from realtime_gateway_protocol.tasks import cancel_and_wait
from shared.http.acceptor import Acceptor
from shared.http.resets import reset
from shared.http.responses import json_error
from shared.metrics import workers as worker_metrics

__all__ = [
    "DRAIN",
    "HTTP_TIMEOUTS",
    "LISTEN_BACKLOG",
    "CannotListen",
    "Drain",
    "JsonErrorRequestHandler",
    "Refusal",
    "Site",
    "run",
    "run_workers",
    "serve",
    "start_site",
]

LISTEN_BACKLOG = 65535
"""Linux silently caps a listen backlog at ``net.core.somaxconn``: asking for more takes all the
system gives (docs/operations.md, "Listen queues")."""

log = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1

OnStarted = Callable[[], Coroutine[Any, Any, None]]
"""Run as a task once every site listens (say so, wait for readiness); cancelled on stop."""

Refusal = Callable[[Exception], tuple[str, int] | None]
"""Why a service cannot start, from what its start raised: the one line it logs and its exit
status, or ``None`` for a crash."""


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
    reuse_port: bool = False
    """Listen with ``SO_REUSEPORT``, beside the other workers of :func:`run_workers`."""


HTTP_TIMEOUTS: web.AppKey[Callable[[], None]] = web.AppKey("http_timeouts")
"""An app sets this to count the connections the HTTP timeout drops (silent, slow or idle)."""


class Drain(Protocol):
    """How an app leaves on SIGTERM without sending all its clients elsewhere at once."""

    @property
    def draining(self) -> bool: ...

    def begin(self) -> None:
        """Go unready; called while the site still listens."""

    async def run(self) -> None:
        """Close the connections; called once the site no longer listens. Cancelled by a
        second stop signal, before the app's own shutdown closes what is left."""


DRAIN: web.AppKey[Drain] = web.AppKey("drain")


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering what it cannot parse as JSON and counting the
    connections its keep-alive timer drops (aiohttp has no public hook for either), and freeing
    a closed WebSocket's state by reference counting."""

    __slots__ = ()

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        # A WebSocket with a heartbeat leaves its ``_on_data_received`` here, a bound method of
        # the WebSocketResponse, which holds the request, which holds this handler: a cycle of
        # about 30 objects per closed socket that only a full collection would free (and never,
        # once frozen: shared/collector.py).
        self._data_received_cb = None

    def _process_keepalive(self) -> None:
        dropping = not self._force_close
        super()._process_keepalive()
        count = getattr(self._manager, "on_timeout", None)
        if dropping and self._force_close and count is not None:
            count()

    async def _drain_helper(self) -> None:
        """aiohttp's wait for the client to take what was written (every response, every
        WebSocket frame), bounded by the site's HTTP timeout: unbounded, a client that sent
        requests and never read their answers held the connection and the kernel's buffer of
        them for good (an outside probe: 200 such connections from one address pinned 750 MB of
        kernel memory). A client that takes nothing for that long is reset and counted as an
        HTTP timeout. The wait is shielded: cancelled, aiohttp's one drain waiter would stay
        cancelled for the next write to trip on."""
        timeout: float | None = getattr(self._manager, "send_timeout", None)
        if timeout is None or self.transport is None or not self._paused:
            return await super()._drain_helper()
        waiter = self._drain_waiter
        if waiter is None:
            waiter = self._drain_waiter = self._loop.create_future()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            transport = self.transport
            if transport is not None:
                reset(transport)
            count = getattr(self._manager, "on_timeout", None)
            if count is not None:
                count()
            raise ConnectionResetError(f"the client took nothing for {timeout:g} s") from None

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
    on_timeout: Callable[[], None] | None = None
    send_timeout: float | None = None

    def __call__(self) -> RequestHandler:
        handler = super().__call__()
        # aiohttp has no setting for the connection handler's class: the subclass adds no state.
        handler.__class__ = JsonErrorRequestHandler
        return handler


STRICT_TRANSPORT_SECURITY = "max-age=31536000"
"""A year, this host only: a browser that saw it never speaks plain http to the host again (a
sibling subdomain is the operator's to include, so ``includeSubDomains`` is left out)."""


async def _strict_transport(_: web.BaseRequest, response: web.StreamResponse) -> None:
    response.headers.setdefault("Strict-Transport-Security", STRICT_TRANSPORT_SECURITY)


async def start_site(site: Site) -> tuple[web.AppRunner, int]:
    """Set up and start one site; returns its runner (to clean up) and the port it listens on.
    A site that terminates TLS itself sends HSTS (RFC 6797) on every response."""
    if site.ssl_context is not None and _strict_transport not in site.app.on_response_prepare:
        site.app.on_response_prepare.append(_strict_transport)
    runner = web.AppRunner(
        site.app,
        access_log=None,
        auto_decompress=False,  # shared.http.coding: a compressed body is refused, never inflated
        shutdown_timeout=site.shutdown_timeout,
        keepalive_timeout=site.http_timeout,
    )
    try:
        await runner.setup()
    except BaseException:
        # The resources opened before the failing one are closed now (a pool, a task), not
        # garbage-collected at exit with an error line of their own before the reason.
        await runner.cleanup()
        raise
    assert runner.server is not None
    runner.server.__class__ = _JsonErrorServer
    runner.server.on_timeout = site.app.get(HTTP_TIMEOUTS)  # type: ignore[attr-defined]
    runner.server.send_timeout = site.http_timeout  # type: ignore[attr-defined]
    tcp = _Site(
        runner,
        site.host,
        site.port,
        ssl_context=site.ssl_context,
        backlog=LISTEN_BACKLOG,
        reuse_port=site.reuse_port or None,
    )
    try:
        await tcp.start()
    except OSError as exc:
        await runner.cleanup()
        raise CannotListen(site.host, site.port, exc) from exc
    port: int = runner.addresses[0][1]
    return runner, port


class _Site(web.TCPSite):
    """aiohttp's TCP site, with an :class:`Acceptor` beside each of its listening sockets: a burst
    of connections that arrives while the loop is busy is taken off the kernel's queue before it
    fills."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acceptors: list[Acceptor] = []

    async def start(self) -> None:
        await super().start()
        assert self._server is not None and self._runner.server is not None
        loop = asyncio.get_running_loop()
        for listener in getattr(self._server, "sockets", ()):
            acceptor = Acceptor(listener, loop, self._runner.server, self._ssl_context)
            acceptor.start()
            self.acceptors.append(acceptor)

    async def stop(self) -> None:
        acceptors, self.acceptors = self.acceptors, []
        for acceptor in acceptors:
            acceptor.stop()
        await super().stop()


async def serve(sites: Sequence[Site], *, on_started: OnStarted | None = None) -> None:
    """Start every site, wait for a stop signal (drain on SIGTERM), then clean up in reverse order.

    Every fixed port is checked first: an app's start-up migrates its database and makes a key,
    which a process that cannot listen must not do."""
    for site in sites:
        if site.port and not site.reuse_port:
            _check_bind(site.host, site.port)
    runners: list[web.AppRunner] = []
    signals: asyncio.Queue[signal.Signals] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    for sig in _STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, signals.put_nowait, sig)
    started: asyncio.Task[None] | None = None
    try:
        for site in sites:
            runner, _ = await start_site(site)
            runners.append(runner)
        if on_started is not None:
            started = loop.create_task(on_started())
        if await signals.get() == signal.SIGTERM:
            await _drain(runners, signals)
    finally:
        try:
            await cancel_and_wait(started)
        finally:
            for runner in reversed(runners):
                await runner.cleanup()


async def _drain(runners: Sequence[web.AppRunner], signals: asyncio.Queue[signal.Signals]) -> None:
    """Every app with a ``DRAIN`` goes unready, stops listening, then drains; together, until
    they are done or another stop signal comes."""
    drains = [(runner, runner.app[DRAIN]) for runner in runners if DRAIN in runner.app]
    if not drains:
        return
    for _, drain in drains:
        drain.begin()
    for runner, _ in drains:
        for site in list(runner.sites):
            await site.stop()
    running: asyncio.Future[Any] = asyncio.gather(*(drain.run() for _, drain in drains))
    interrupted: asyncio.Future[Any] = asyncio.ensure_future(signals.get())
    try:
        await asyncio.wait({running, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        if interrupted.done():
            log.warning("a second stop signal: the drain is cut short")
    finally:
        await cancel_and_wait(running, interrupted)  # logs a drain that failed


def run(sites: Sequence[Site], *, on_started: OnStarted | None = None) -> None:
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(sites, on_started=on_started))


def run_workers(
    build: Callable[[bool], Sequence[Site]],
    *,
    workers: int,
    addresses: Sequence[tuple[str, int]],
    on_listening: Callable[[], None],
    refusal: Refusal = lambda exc: None,
) -> int:
    """Serve the sites ``build(reuse_port)`` makes, in this process or in ``workers`` forked ones.

    Each worker builds its own apps after the fork (an app's loop, sockets and pools cannot cross
    a fork) and listens on the shared ``addresses`` with ``SO_REUSEPORT``, so the kernel spreads
    new connections between them. The parent only supervises: it says so once every worker
    listens, forwards SIGINT/SIGTERM, and starts a new worker when one dies, unless workers die
    ``MAX_RESTARTS`` times within ``RESTART_WINDOW`` seconds (a crash loop: it stops them all and
    exits with the last one's status, for the process manager to see). Their metrics are summed
    in every scrape (:mod:`shared.metrics.workers`). Returns the exit status.

    A first worker that cannot start (the database is down, a credential is refused) stops them
    all at once with its status, as one process would stop: ``refusal`` turns what it raised into
    the one line it logs and that status (``None``: a crash, logged with its traceback)."""
    if workers == 1:

        async def started() -> None:
            on_listening()

        run(build(False), on_started=started)
        return 0
    for host, port in addresses:
        _check_bind(host, port)
    metrics = worker_metrics.make_directory()
    try:
        return _Supervisor(build, metrics, refusal).run(workers, on_listening)
    finally:
        worker_metrics.remove_directory(metrics)


RESTART_WINDOW = 60.0
MAX_RESTARTS = 5


class _Supervisor:
    """The parent of the workers: no event loop, only fork, wait and signals."""

    def __init__(
        self, build: Callable[[bool], Sequence[Site]], metrics: Path, refusal: Refusal
    ) -> None:
        self._build = build
        self._metrics = metrics
        self._refusal = refusal
        self._live: set[int] = set()
        self._stopping = False
        self._deaths: list[float] = []

    def _spawn(self, ready_w: int | None) -> int:
        """Fork one worker (with stop signals blocked in the caller, so none is orphaned)."""
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _stop_with_parent()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
                worker_metrics.enable(self._metrics)
                code = _worker(self._build, ready_w, self._refusal)
            finally:
                os._exit(code)
        self._live.add(pid)
        return pid

    def _forward(self, signum: int, _frame: object) -> None:
        self._stopping = True
        for pid in self._live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def run(self, workers: int, on_listening: Callable[[], None]) -> int:
        ready_r, ready_w = os.pipe()
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        for _ in range(workers):
            self._spawn(ready_w)
        os.close(ready_w)
        for sig in _STOP_SIGNALS:
            signal.signal(sig, self._forward)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        with os.fdopen(ready_r, "rb") as ready:
            started = len(ready.read(workers)) == workers
        failed_start = not started and not self._stopping
        if started:
            on_listening()
        elif failed_start:  # the service's start failed: restarting would fail the same way
            log.error("a worker could not start; stopping")
            self._forward(signal.SIGTERM, None)
        status = 0
        while self._live:
            pid, wait_status = os.wait()
            if pid not in self._live:
                continue
            self._live.discard(pid)
            worker_metrics.worker_exited(self._metrics, pid)
            code = os.waitstatus_to_exitcode(wait_status)
            if failed_start and code != 0 and status == 0:
                status = code if code > 0 else 128 - code
            signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
            try:
                if not self._stopping:
                    status = self._replace(pid, code)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        return status or (1 if failed_start else 0)

    def _replace(self, pid: int, code: int) -> int:
        """A worker died on its own: start another, or give up on a crash loop."""
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < RESTART_WINDOW] + [now]
        status = code if code > 0 else 128 - code
        if len(self._deaths) >= MAX_RESTARTS:
            log.error(
                "workers keep dying; stopping",
                extra={"pid": pid, "code": code, "deaths": len(self._deaths)},
            )
            self._forward(signal.SIGTERM, None)
            return status or 1
        new = self._spawn(None)
        log.warning("a worker died; started another", extra={"pid": pid, "code": code, "new": new})
        return 0


def _check_bind(host: str, port: int) -> None:
    """Raise ``CannotListen`` when the port is taken (before any app starts, before any fork).
    The probe does not set ``SO_REUSEPORT``, so another running instance's workers count as
    taking it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CannotListen(host, port, exc) from exc


def _stop_with_parent() -> None:
    """Ask Linux for a SIGTERM when the parent dies (even by SIGKILL), so no worker is orphaned."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        log.warning("workers will outlive a killed parent", extra={"errno": ctypes.get_errno()})


def _worker(build: Callable[[bool], Sequence[Site]], ready_w: int | None, refusal: Refusal) -> int:
    """One worker's life; its status is what the parent sees. ``ready_w`` hears it listen (the
    first workers only: a replacement listens beside the others, and nobody waits for it)."""

    async def started() -> None:
        if ready_w is not None:
            os.write(ready_w, b"1")
            os.close(ready_w)

    try:
        run(build(True), on_started=started)
        return 0
    except CannotListen as exc:
        log.error(f"worker {os.getpid()}: {exc}")
        return 1
    except Exception as exc:
        refused = refusal(exc)
        if refused is None:
            log.exception("worker failed")
            return 1
        message, status = refused
        log.error(f"worker {os.getpid()}: {message}")
        return status
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
