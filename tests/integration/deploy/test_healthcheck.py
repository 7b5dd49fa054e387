"""The container healthcheck against a real HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from services.healthcheck import is_ready, main, readyz_url
from tests.services import free_port

READY = web.AppKey("ready", list[bool])


async def readyz(request: web.Request) -> web.Response:
    if request.app[READY][0]:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "degraded"}, status=503)


async def test_ready_only_while_readyz_answers_200(
    aiohttp_server: Callable[[web.Application], Awaitable[Any]],
) -> None:
    app = web.Application()
    app[READY] = [True]
    app.router.add_get("/readyz", readyz)
    server = await aiohttp_server(app)
    url = str(server.make_url("/readyz"))

    assert await asyncio.to_thread(is_ready, url)
    assert await asyncio.to_thread(main, [url]) == 0
    app[READY][0] = False
    assert not await asyncio.to_thread(is_ready, url)
    assert await asyncio.to_thread(main, [url]) == 1


def test_nothing_listening_is_not_ready() -> None:
    assert not is_ready(f"http://127.0.0.1:{free_port()}/readyz", timeout=2)


def test_url_comes_from_the_service_port() -> None:
    assert readyz_url([], {"AUTH_PORT": "8081"}) == "http://127.0.0.1:8081/readyz"
    assert readyz_url([], {"WS_PORT": "8082"}) == "http://127.0.0.1:8082/readyz"
    assert readyz_url(["http://x/readyz"], {"WS_PORT": "1"}) == "http://x/readyz"
    with pytest.raises(SystemExit, match="AUTH_PORT or WS_PORT"):
        readyz_url([], {})
    with pytest.raises(ValueError, match="http"):
        is_ready("file:///etc/passwd")
