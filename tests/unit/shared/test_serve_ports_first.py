"""A process that cannot listen never starts an app: start-up migrates the database and makes a
signing key, which the first-hour report found done in PostgreSQL before the port check failed."""

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
