"""Both services as they are served (shared.http.serve's runner), attacked at the HTTP layer with raw
sockets: malformed requests answer JSON without a traceback in the log (item 9), and slow or
silent clients are dropped after the HTTP timeout (item 7)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from auth_service.app import create_app as create_auth_app
from auth_service.appkeys import METRICS as AUTH_METRICS
from auth_service.settings import Settings as AuthSettings
from shared.bus import InProcessBus
from shared.http.serve import Site, start_site
from tests.integration.ws.harness import wait_until
from tests.support.raw_http import raw_request
from tests.support.raw_ws import RawWebSocket
from ws_service.app import create_app as create_ws_app
from ws_service.appkeys import METRICS as WS_METRICS
from ws_service.settings import Settings as WsSettings

HTTP_TIMEOUT = 0.5
API_KEY = "test-api-key-0123456789"
Start = Callable[[str], Awaitable[int]]
METRIC = {"auth": "auth_limit_hits_total", "ws": "ws_limit_hits_total"}


@pytest.fixture
def apps() -> dict[int, web.Application]:
    """The app behind each port ``start`` opened."""
    return {}


@pytest.fixture
async def start(tmp_path: Path, apps: dict[int, web.Application]) -> AsyncIterator[Start]:
    """``await start("auth" | "ws")``: the service on a free port, as ``python -m`` serves it."""
    runners: list[web.AppRunner] = []

    async def run(which: str) -> int:
        bus = InProcessBus()
        if which == "auth":
            app = create_auth_app(
                AuthSettings(
                    database_url=f"sqlite:///{tmp_path / 'auth.db'}",
                    data_dir=tmp_path,
                    key_encryption_secrets=("test-secret-0123456789abcdef",),
                    http_timeout=HTTP_TIMEOUT,
                ),
                bus=bus,
            )
        else:
            app = create_ws_app(
                WsSettings(
                    jwks_url="http://127.0.0.1:9/jwks",
                    issuer="http://x",
                    http_timeout=HTTP_TIMEOUT,
                    api_keys=(API_KEY,),
                ),
                bus=bus,
            )
        runner, port = await start_site(Site(app, "127.0.0.1", 0, http_timeout=HTTP_TIMEOUT))
        runners.append(runner)
        apps[port] = app
        return port

    yield run
    for runner in runners:
        await runner.cleanup()


MALFORMED = {
    "bad-header-line": b"GET /healthz HTTP/1.1\r\nHost: x\r\nthis is no header\r\n\r\n",
    "100kb-url": b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "obs-fold": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: b\r\n  folded\r\n\r\n",
    "control-char": b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\x01b\r\n\r\n",
    "bad-method": b"G(T /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad-version": b"GET /healthz HTTP/9.x\r\nHost: x\r\n\r\n",
    "huge-header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 20_000 + b"\r\n\r\n",
}


@pytest.mark.parametrize("service", ["auth", "ws"])
@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_http_is_a_json_400_without_a_traceback(
    start: Start, service: str, request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    port = await start(service)
    with caplog.at_level(logging.INFO):
        resp = await raw_request("127.0.0.1", port, request_bytes)
    assert resp.status == 400, resp.body
    assert resp.content_type == "application/json"
    assert resp.json()["error"] == "bad_request"
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


CODED = {
    "corrupt gzip": (b"gzip", b'{"channel":"chat:a","data":1}'),
    "valid gzip": (b"gzip", gzip.compress(b'{"username":"alice","password":"x"}')),
    "deflate": (b"deflate", b"\x00" * 64),
    "br": (b"br", b"\xff" * 64),
    # Two header lines are one list (RFC 9110 section 5.3): the second line counts too.
    "identity, then a gzip line": (
        b"identity\r\nContent-Encoding: gzip",
        gzip.compress(b'{"channel":"chat:a","data":1}'),
    ),
}
CODED_PATHS = {"auth": ("/v1/login", "/v1/register", "/healthz"), "ws": ("/v1/publish", "/healthz")}


@pytest.mark.parametrize("service", ["auth", "ws"])
@pytest.mark.parametrize("coded", CODED.values(), ids=CODED.keys())
async def test_a_compressed_body_is_refused_never_inflated(
    start: Start, service: str, coded: tuple[bytes, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp inflated such a body: a corrupt one was a 500 with a traceback where a handler
    read it, and a traceback from aiohttp's own read where none did (GET /healthz, or a request
    refused before its body: no credential needed to fill the error log)."""
    port = await start(service)
    coding, body = coded
    for path in CODED_PATHS[service]:
        method = b"GET" if path == "/healthz" else b"POST"
        request = (
            method + b" " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Encoding: " + coding + b"\r\n"
            b"Authorization: Bearer " + API_KEY.encode() + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        with caplog.at_level(logging.INFO):
            resp = await raw_request("127.0.0.1", port, request)
        if path == "/healthz":
            assert resp.status == 200, resp.body
        else:
            assert resp.status == 415, resp.body
            assert resp.json()["error"] in ("unsupported_media_type", "invalid_request"), resp.body
            assert "must not be compressed" in resp.json()["error_description"]
    await asyncio.sleep(0.05)  # aiohttp reads an unread body after the response
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


COOKIE_ENDPOINTS = {
    "/v1/token": b"grant_type=refresh_token",
    "/v1/logout": b"",
    "/v1/ws-ticket": b"",
}


@pytest.mark.parametrize("path", COOKIE_ENDPOINTS)
@pytest.mark.parametrize("cookie", [b"a\xffb", b"\xed\xa0\x80", b"caf\xc3\xa9"])
async def test_a_session_cookie_that_is_not_ascii_is_no_session(
    start: Start, path: str, cookie: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Header bytes that are not UTF-8 reach the cookie as surrogate escapes, which the session
    library encodes before it decrypts: every cookie endpoint answered 500 with a traceback. Such
    a cookie is one that cannot be read, a session that has ended (deleted with a 400
    ``invalid_grant`` from an allowed Origin); without an Origin, 403."""
    port = await start("auth")
    body = COOKIE_ENDPOINTS[path]
    request = (
        (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n"
        ).encode()
        + b"Cookie: gw_session="
        + cookie
        + b"\r\n\r\n"
        + body
    )
    with caplog.at_level(logging.INFO):
        resp = await raw_request("127.0.0.1", port, request)
    assert (resp.status, resp.json()["error"]) == (403, "csrf_failed"), resp.body
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def closed_after(reader: asyncio.StreamReader, limit: float) -> float:
    """Seconds until the server closes the connection (reading whatever it sends)."""
    started = time.monotonic()
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(limit):
            while await reader.read(4096):
                pass
    return time.monotonic() - started


@pytest.mark.parametrize("service", ["auth", "ws"])
@pytest.mark.parametrize("behaviour", ["silent", "partial-headers", "dribble", "idle-keepalive"])
async def test_slow_and_silent_clients_are_dropped(
    start: Start, apps: dict[int, web.Application], service: str, behaviour: str
) -> None:
    port = await start(service)
    registry = apps[port][AUTH_METRICS if service == "auth" else WS_METRICS].registry
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if behaviour == "partial-headers":
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        elif behaviour == "dribble":
            with contextlib.suppress(ConnectionError):  # dropped while dribbling
                for byte in b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n"[:8]:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(HTTP_TIMEOUT / 4)
        elif behaviour == "idle-keepalive":
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await closed_after(reader, HTTP_TIMEOUT * 6) < HTTP_TIMEOUT * 5
    finally:
        writer.close()
    # Counted in /metrics like every other limit.
    assert registry.get_sample_value(METRIC[service], {"limit": "http_timeout"}) == 1


async def test_a_slow_body_is_408_json(start: Start) -> None:
    port = await start("auth")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"user'
        )
        async with asyncio.timeout(HTTP_TIMEOUT * 6):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), head
        assert b"application/json" in head
    finally:
        writer.close()


async def test_an_upgraded_socket_outlives_the_http_timeout(start: Start) -> None:
    port = await start("ws")
    raw = await RawWebSocket.connect("127.0.0.1", port)
    try:
        assert not await raw.eof_within(HTTP_TIMEOUT * 3)
    finally:
        raw.abort()


@pytest.mark.parametrize("service", ["auth", "ws"])
async def test_a_client_that_never_reads_its_answers_is_reset(
    start: Start, apps: dict[int, web.Application], service: str
) -> None:
    """Requests sent, answers never read: aiohttp waited for the client to take them without a
    bound, holding the connection and megabytes of the kernel's buffer for good (an outside
    probe: still open after 300 s). It is reset once nothing was taken for the HTTP timeout."""
    port = await start(service)
    registry = apps[port][AUTH_METRICS if service == "auth" else WS_METRICS].registry
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        request = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
        with contextlib.suppress(TimeoutError, ConnectionError):  # the server may stop reading
            async with asyncio.timeout(HTTP_TIMEOUT * 4):
                for _ in range(400):  # about 15 MB of answers
                    await loop.sock_sendall(sock, request)
        counted = {"limit": "http_timeout"}
        await wait_until(
            lambda: registry.get_sample_value(METRIC[service], counted) == 1, HTTP_TIMEOUT * 10
        )
        with pytest.raises(ConnectionResetError):  # a reset: the kernel's queue is dropped too
            async with asyncio.timeout(HTTP_TIMEOUT * 4):
                while await loop.sock_recv(sock, 65536):
                    pass
    finally:
        sock.close()
