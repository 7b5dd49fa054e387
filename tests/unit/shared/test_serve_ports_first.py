"""A process that cannot listen never starts an app: start-up migrates the database and makes a
signing key, which the first-hour report found done in PostgreSQL before the port check failed.
And an app whose start-up fails closes what it had opened before its reason is told."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from shared.http.serve import CannotListen, Site, serve


async def test_every_port_is_checked_before_any_app_starts() -> None:
    started: list[str] = []

    def app(name: str) -> web.Application:
        async def ctx(_: web.Application) -> AsyncIterator[None]:
            started.append(name)
            yield

        application = web.Application()
        application.cleanup_ctx.append(ctx)
        return application

    with socket.socket() as free, socket.socket() as taken:
        free.bind(("127.0.0.1", 0))
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        free_port, taken_port = free.getsockname()[1], taken.getsockname()[1]
        free.close()
        sites = [
            Site(app("first"), "127.0.0.1", free_port),
            Site(app("second"), "127.0.0.1", taken_port),
        ]
        with pytest.raises(CannotListen, match=f"127.0.0.1:{taken_port} is already in use"):
            await serve(sites)
    assert started == []


async def test_a_failed_start_up_closes_what_it_opened() -> None:
    closed: list[str] = []

    async def opened(_: web.Application) -> AsyncIterator[None]:
        try:
            yield
        finally:
            closed.append("pool")

    async def refuses(_: web.Application) -> AsyncIterator[None]:
        raise RuntimeError("the key ring is locked")
        yield

    app = web.Application()
    app.cleanup_ctx.extend([opened, refuses])
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(RuntimeError, match="locked"):
        await serve([Site(app, "127.0.0.1", port)])
    assert closed == ["pool"], "closed at once, not by the garbage collector at exit"
