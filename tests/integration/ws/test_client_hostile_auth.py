"""The Python client against a hostile or broken auth_service and an upgrade that redirects: the
password, refresh token and access token go to the configured URLs and nowhere else, an answer
cannot make the client hold more than a token answer, and anything but a token answer is a
``ClientError`` (``Unreachable`` from ``start()``), never a raw ``KeyError`` or a hang. An outside
probe found each: a 307 on the upgrade sent the access token to another origin, a 308 re-posted
the password there, a 1 MiB gzip answer took the client to 3 GB, a trickling answer hung
``start()`` for 300 s."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from realtime_gateway_client import ClientError, GatewayClient, TemporaryFailure, Unreachable
from realtime_gateway_client.client import MAX_ANSWER_BYTES
from tests.services import free_port

GOOD = {"access_token": "access-0", "refresh_token": "refresh-0", "expires_in": 60}


class Elsewhere:
    """Another origin: records whatever reaches it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[tuple[str, bytes]] = []
        self.frames: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.anything)
        return app

    async def anything(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, await request.read()))
        if request.path == "/ws":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                self.frames.append(msg.data)
            return ws
        return web.json_response(GOOD)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Serve = Callable[[web.Application, int], Awaitable[None]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(app: web.Application, port: int) -> None:
        runner = web.AppRunner(app, shutdown_timeout=1)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", port).start()

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def elsewhere(serve: Serve) -> Elsewhere:
    other = Elsewhere()
    await serve(other.app(), other.port)
    return other


async def gateway_with(serve: Serve, login: Handler, socket: Handler | None = None) -> int:
    port = free_port()
    app = web.Application()
    app.router.add_post("/v1/login", login)
    if socket is not None:
        app.router.add_get("/ws", socket)
    await serve(app, port)
    return port


def client(port: int, **options: Any) -> GatewayClient:
    url = f"http://127.0.0.1:{port}"
    return GatewayClient(url, f"ws://127.0.0.1:{port}/ws", "alice", "the-password", **options)


async def test_a_redirect_of_the_upgrade_is_not_followed(
    serve: Serve, elsewhere: Elsewhere
) -> None:
    async def login(request: web.Request) -> web.Response:
        return web.json_response(GOOD)

    async def socket(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"http://127.0.0.1:{elsewhere.port}/ws")

    port = await gateway_with(serve, login, socket)
    with pytest.raises(Unreachable) as err:
        async with client(port, connect_timeout=2):
            pass
    assert err.value.status == 307
    await asyncio.sleep(0.1)
    assert elsewhere.requests == [] and elsewhere.frames == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_of_the_login_is_not_followed(
    serve: Serve, elsewhere: Elsewhere, status: int
) -> None:
    async def login(request: web.Request) -> web.Response:
        location = f"http://127.0.0.1:{elsewhere.port}/v1/login"
        return web.Response(status=status, headers={"Location": location})

    port = await gateway_with(serve, login)
    with pytest.raises(Unreachable) as err:
        async with client(port, connect_timeout=2):
            pass
    assert err.value.status == status
    assert elsewhere.requests == [], "the password went to another origin"


def answer(body: bytes, **headers: str) -> Handler:
    async def login(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": "application/json", **headers})

    return login


async def streamed(request: web.Request) -> web.StreamResponse:
    """An answer over the cap, without a Content-Length."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for _ in range(MAX_ANSWER_BYTES // 4096 + 2):
        await response.write(b" " * 4096)
    await response.write_eof()
    return response


async def trickle(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for _ in range(60):
        await response.write(b" ")
        await asyncio.sleep(0.5)
    return response


BROKEN: dict[str, Handler] = {
    "a gzip bomb": answer(
        gzip.compress(b" " * (64 * MAX_ANSWER_BYTES)), **{"Content-Encoding": "gzip"}
    ),
    "over the cap, streamed": streamed,
    "an HTML page": answer(b"<html>hello</html>", **{"Content-Type": "text/html"}),
    "null": answer(b"null"),
    "an empty object": answer(b"{}"),
    "no refresh token": answer(json.dumps({**GOOD, "refresh_token": None}).encode()),
    "expires_in NaN": answer(json.dumps(GOOD).replace("60", "NaN").encode()),
    "expires_in a string": answer(json.dumps({**GOOD, "expires_in": "60"}).encode()),
    "expires_in 0": answer(json.dumps({**GOOD, "expires_in": 0}).encode()),
    "expires_in of 5000 digits": answer(json.dumps(GOOD).replace("60", "9" * 5000).encode()),
    "a token that is not a string": answer(json.dumps({**GOOD, "access_token": 5}).encode()),
}


@pytest.mark.parametrize("case", list(BROKEN))
async def test_anything_but_a_token_answer_is_unreachable_at_once(serve: Serve, case: str) -> None:
    port = await gateway_with(serve, BROKEN[case])
    started = time.monotonic()
    with pytest.raises(Unreachable) as err:
        async with client(port, connect_timeout=2):
            pass
    assert isinstance(err.value, ClientError)
    assert err.value.status == 200 or err.value.status is None, err.value
    assert time.monotonic() - started < 2


async def test_an_answer_that_trickles_is_unreachable_within_the_connect_timeout(
    serve: Serve,
) -> None:
    port = await gateway_with(serve, trickle)
    started = time.monotonic()
    with pytest.raises(Unreachable, match="no answer within 1 s"):
        async with client(port, connect_timeout=1):
            pass
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("header", "advice"),
    [("7", 7.0), ("inf", None), ("nan", None), ("-5", None), ("1e9", None), ("Wed, 21 Oct", None)],
)
async def test_retry_after_is_delay_seconds_or_no_advice(
    serve: Serve, header: str, advice: float | None
) -> None:
    """``float`` took ``inf`` and ``nan`` from a hostile server and handed them to the caller,
    whose backoff then slept forever or raised (an outside probe)."""

    async def login(request: web.Request) -> web.Response:
        body = b'{"error": "too_many_attempts", "error_description": "slow down"}'
        return web.Response(
            status=429, body=body, content_type="application/json", headers={"Retry-After": header}
        )

    port = await gateway_with(serve, login)
    with pytest.raises(TemporaryFailure) as err:
        async with client(port, connect_timeout=2):
            pass
    assert err.value.retry_after == advice
