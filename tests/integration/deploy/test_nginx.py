"""The load-balancer config: its routing promises, and real nginx runs where nginx is installed."""

from __future__ import annotations

import asyncio
import io
import re
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web

from tests.lb import NGINX_CONF, PUBLISH_ROUTE, find_nginx, nginx_args, write_config
from tests.services import free_port
from tests.support.poll import poll
from ws_service import api as ws_api

REPLICA = web.AppKey("replica", str)

ServerMaker = Callable[..., Awaitable[Any]]


@pytest.fixture
def nginx() -> str:
    return find_nginx()


def test_routes_and_timeouts_match_the_deployment() -> None:
    conf = NGINX_CONF.read_text()
    assert "listen 8443 ssl backlog=4096;" in conf, "unprivileged: compose publishes 443 -> 8443"
    assert re.search(r"location /auth/ \{\s*proxy_pass http://auth/;", conf), "prefix not stripped"
    assert re.search(r"location = /ws \{\s*proxy_pass http://ws;", conf)
    assert "/v1/publish" not in conf, "routed only when the publish overlay adds it"
    assert "include /etc/nginx/routes/*.conf;" in conf
    assert re.search(r"\$ \{\s*proxy_pass http://ws;", PUBLISH_ROUTE.read_text())

    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "proxy_set_header Connection $connection_upgrade;" in conf
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in conf
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in conf
    assert "server ws:8082 resolve max_fails=0;" in conf, "a draining replica is not a failure"
    read_timeout = re.search(r"proxy_read_timeout (\d+)s;", conf)
    assert read_timeout and int(read_timeout.group(1)) > 30, "must outlast the 30 s heartbeat"


def routed_api_paths() -> set[str]:
    """The paths publish.conf's one regex location sends to the ws replicas."""
    found = re.search(r"location ~ \^/v1/\(([a-z|]+)\)\$ \{", PUBLISH_ROUTE.read_text())
    assert found, "publish.conf routes the server API with one regex location"
    return {f"/v1/{name}" for name in found.group(1).split("|")}


def test_the_overlay_routes_every_path_of_the_server_api() -> None:
    """A backend calls the whole API through the load balancer: an endpoint added to ws_service
    and left out of publish.conf would answer nginx's 404 there."""
    api = {route.path for route in ws_api.ROUTES if isinstance(route, web.RouteDef)}
    assert routed_api_paths() == api


@pytest.mark.parametrize("publish", [True, False], ids=["publish-on", "publish-off"])
def test_nginx_accepts_the_config(nginx: str, tmp_path: Path, publish: bool) -> None:
    conf = write_config(
        tmp_path, trustme.CA(), {"auth": [8081], "ws": [8082, 8083]}, 8443, publish=publish
    )
    result = subprocess.run(
        [*nginx_args(nginx, tmp_path, conf), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


async def echo_request(request: web.Request) -> web.Response:
    """What a replica saw: who it is, the path after the proxy, and the forwarded headers."""
    return web.json_response(
        {
            "replica": request.app[REPLICA],
            "path": request.path,
            "proto": request.headers.get("X-Forwarded-Proto"),
            "for": request.headers.get("X-Forwarded-For"),
        }
    )


async def echo_socket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        await ws.send_str(f"{request.app[REPLICA]}:{message.data}")
    return ws


def replica(name: str) -> web.Application:
    app = web.Application()
    app[REPLICA] = name
    app.router.add_get("/ws", echo_socket)
    app.router.add_route("*", "/{tail:.*}", echo_request)
    return app


@pytest.fixture
def health_port() -> int:
    return free_port()


@pytest.fixture
async def proxy(
    nginx: str,
    tmp_path: Path,
    aiohttp_server: ServerMaker,
    health_port: int,
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[str, ssl.SSLContext]]:
    """nginx with the compose config on a loopback port, in front of 1 auth and 2 ws replicas,
    its healthcheck server on ``health_port``. Publishing is on unless the test passes False."""
    publish = getattr(request, "param", True)
    servers = {name: await aiohttp_server(replica(name)) for name in ("auth", "ws-a", "ws-b")}
    ports = {
        "auth": [servers["auth"].port],
        "ws": [servers["ws-a"].port, servers["ws-b"].port],
    }
    listen_port = free_port()
    ca = trustme.CA()
    conf = write_config(tmp_path, ca, ports, listen_port, publish=publish, health_port=health_port)
    process = await asyncio.create_subprocess_exec(
        *nginx_args(nginx, tmp_path, conf), "-g", "daemon off;"
    )
    try:
        async with asyncio.timeout(10):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", listen_port)
                except OSError:
                    assert process.returncode is None, (tmp_path / "error.log").read_text()
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                await writer.wait_closed()
                break
        context = ssl.create_default_context()
        ca.configure_trust(context)
        yield f"https://127.0.0.1:{listen_port}", context
    finally:
        process.terminate()
        await process.wait()


async def test_nginx_routes_auth_and_ws_through_tls(
    proxy: tuple[str, ssl.SSLContext],
) -> None:
    base, context = proxy
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/auth/token", ssl=context) as response:
            seen = await response.json()
            assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
        assert seen == {
            "replica": "auth",
            "path": "/token",
            "proto": "https",
            "for": "127.0.0.1",
        }

        replicas = set()
        for _ in range(4):
            async with session.post(f"{base}/v1/publish", ssl=context) as response:
                body = await response.json()
            assert body["path"] == "/v1/publish"
            replicas.add(body["replica"])
        assert replicas == {"ws-a", "ws-b"}
        for path in sorted(routed_api_paths()):
            async with session.get(f"{base}{path}", ssl=context) as response:
                assert (await response.json())["path"] == path
        for path in ("/v1/publishx", "/v1/login", "/v1/publish/x"):
            async with session.post(f"{base}{path}", ssl=context) as response:
                assert response.status == 404, path
                assert response.content_type != "application/json", "a replica answered"

        async with session.ws_connect(f"{base.replace('https', 'wss')}/ws", ssl=context) as ws:
            await ws.send_str("hello")
            reply = await ws.receive_str(timeout=5)
        assert reply in {"ws-a:hello", "ws-b:hello"}

        async with session.get(f"{base}/elsewhere", ssl=context) as response:
            assert response.status == 404

        # The operator's endpoints stay inside, however the path is spelled (they were public).
        for inside in ("/auth/metrics", "/auth/readyz", "/auth//metrics", "/auth/%6Detrics"):
            async with session.get(f"{base}{inside}", ssl=context) as response:
                assert response.status == 404, inside
                assert (await response.json())["error"] == "not_found", "nginx answered, no replica"
        async with session.get(f"{base}/auth/healthz", ssl=context) as response:
            assert (await response.json())["path"] == "/healthz", "the rest of /auth is routed"

        # RFC 8414 section 3.1: the issuer https://host/auth's metadata, at the root.
        metadata = f"{base}/.well-known/oauth-authorization-server/auth"
        async with session.get(metadata, ssl=context) as response:
            seen = await response.json()
        assert (seen["replica"], seen["path"]) == (
            "auth",
            "/.well-known/oauth-authorization-server",
        )


async def test_the_access_log_never_holds_a_query_string(
    proxy: tuple[str, ssl.SSLContext], tmp_path: Path
) -> None:
    """A ticket travels in /ws?ticket=...: the access log keeps the path only."""
    base, context = proxy
    secret = "eyJhbGciOiJSUzI1NiJ9.ticket-payload.signature"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            f"{base.replace('https', 'wss')}/ws?ticket={secret}", ssl=context
        ) as ws:
            await ws.send_str("hi")
            await ws.receive_str(timeout=5)
        async with session.get(f"{base}/auth/token?refresh_token={secret}", ssl=context):
            pass
    log = tmp_path / "access.log"

    async def logged() -> bool:  # nginx writes its line after the response
        return "/auth/token" in (log.read_text() if log.exists() else "")

    await poll(logged)
    text = log.read_text()
    assert '"GET /ws HTTP/1.1" 101' in text
    assert secret not in text and "ticket=" not in text and "?" not in text


async def test_a_body_nginx_refuses_gets_the_services_json_error(
    proxy: tuple[str, ssl.SSLContext],
) -> None:
    """An outside probe: past nginx's 1 MiB a client read nginx's HTML page, where the docs
    promise every error as JSON."""
    base, context = proxy
    async with aiohttp.ClientSession() as session:
        for path in ("/auth/v1/token", "/v1/publish"):
            body = io.BytesIO(b"x" * (1 << 21))  # raw bytes this large warn (ResourceWarning)
            async with session.post(f"{base}{path}", data=body, ssl=context) as resp:
                assert resp.status == 413
                assert resp.content_type == "application/json"
                assert (await resp.json())["error"] == "request_too_large"


async def test_nginx_serves_the_demo_page_with_a_strict_csp(
    proxy: tuple[str, ssl.SSLContext],
) -> None:
    base, context = proxy
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/", ssl=context) as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert "<script" in await response.text()
            csp = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp
            # A location's add_header drops the server block's: page_headers.conf repeats it.
            assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
            # The page's own host and port (an outside probe: $host dropped a port other than
            # 443, so a PUBLIC_ORIGIN on :8443 was told to log in on 443).
            origin = base.removeprefix("https://")
            assert f"connect-src 'self' wss://{origin};" in csp
        async with session.get(f"{base}/gateway-client.js", ssl=context) as response:
            assert response.status == 200
            assert response.content_type == "text/javascript"
            assert "export class GatewayClient" in await response.text()
            assert "Content-Security-Policy" in response.headers
        async with session.get(f"{base}/favicon.svg", ssl=context) as response:
            assert response.status == 200
            assert response.content_type == "image/svg+xml"
        async with session.get(f"{base}/config.json", ssl=context) as response:
            assert await response.json() == {
                "authUrl": f"https://{origin}/auth",
                "wsUrl": f"wss://{origin}/ws",
            }


@pytest.mark.parametrize("proxy", [False], indirect=True, ids=["publish-off"])
async def test_without_the_publish_overlay_nginx_does_not_route_publish(
    proxy: tuple[str, ssl.SSLContext],
) -> None:
    base, context = proxy
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/v1/publish", ssl=context) as response:
            assert response.status == 404
            assert response.content_type != "application/json", "a replica answered"
        async with session.get(f"{base}/auth/token", ssl=context) as response:
            assert (await response.json())["replica"] == "auth"


async def test_the_healthcheck_answers_on_loopback_without_tls(
    proxy: tuple[str, ssl.SSLContext], health_port: int
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{health_port}/healthz") as response:
            assert response.status == 200
            assert await response.text() == "ok\n"
        async with session.get(f"http://127.0.0.1:{health_port}/auth/token") as response:
            assert response.status == 404
