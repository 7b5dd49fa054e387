"""The embedded stack behind `make run`: one process, both services, one in-process bus."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from tests.system.procs import embedded_env, service

pytestmark = pytest.mark.system
PASSWORD = "correct horse battery staple"


async def receive_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    async with asyncio.timeout(5):
        message = await ws.receive()
    assert message.type == aiohttp.WSMsgType.TEXT, message
    body: dict[str, Any] = message.json()
    return body


async def sign_up(http: aiohttp.ClientSession, auth: str) -> dict[str, Any]:
    """erin registered and logged in: her token response."""
    creds = {"username": "erin", "password": PASSWORD}
    async with http.post(f"{auth}/v1/register", json=creds) as resp:
        assert resp.status == 201
    async with http.post(f"{auth}/v1/login", json=creds) as resp:
        tokens: dict[str, Any] = await resp.json()
    return tokens


async def log_out(http: aiohttp.ClientSession, auth: str, tokens: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    async with http.post(f"{auth}/v1/logout", headers=headers) as resp:
        assert resp.status == 200


async def test_make_run_stack_serves_wss_and_logout_closes_the_socket(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    tls = ssl.create_default_context()
    ca.configure_trust(tls)
    env, auth_port, ws_port = embedded_env(
        tmp_path,
        WS_TLS_CERT=str(cert_path),
        WS_TLS_KEY=str(key_path),
    )
    auth = f"http://127.0.0.1:{auth_port}"
    with service("services", env, ws_port, tmp_path, tls=tls):
        async with aiohttp.ClientSession() as http:
            tokens = await sign_up(http, auth)
            async with http.ws_connect(f"wss://localhost:{ws_port}/ws", ssl=tls) as ws:
                await ws.send_json({"type": "auth", "token": tokens["access_token"]})
                welcome = await receive_json(ws)
                assert welcome["type"] == "auth_success"
                assert welcome["user"]["username"] == "erin"
                await log_out(http, auth, tokens)
                assert (await receive_json(ws))["type"] == "revoked"
                async with asyncio.timeout(2):
                    closed = await ws.receive()
                assert closed.type == aiohttp.WSMsgType.CLOSE
                assert (closed.data, closed.extra) == (4403, "session_revoked")


async def test_a_restarted_stack_still_refuses_the_tokens_of_a_logged_out_session(
    tmp_path: Path,
) -> None:
    """The in-process bus keeps nothing, and ws_service's revocations lived only there: after a
    restart a logged-out session's access token authenticated again, could subscribe and
    publish, until it expired (an outside probe). auth_service keeps every revocation in force,
    and announces them again once ws_service listens."""
    env, auth_port, ws_port = embedded_env(tmp_path)
    auth = f"http://127.0.0.1:{auth_port}"
    with service("services", env, ws_port, tmp_path):
        async with aiohttp.ClientSession() as http:
            tokens = await sign_up(http, auth)
            await log_out(http, auth, tokens)
    with service("services", env, ws_port, tmp_path):
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"ws://127.0.0.1:{ws_port}/ws") as ws,
        ):
            await ws.send_json({"type": "auth", "token": tokens["access_token"]})
            refusal = await receive_json(ws)
            assert (refusal["type"], refusal["code"]) == ("auth_error", "session_revoked")


async def test_make_run_on_redis_delivers_live_messages_and_logouts(
    tmp_path: Path, redis_url: str
) -> None:
    """With REDIS_URL the history store is Redis, which publishes each message through Redis:
    the launcher gave both services an in-process bus all the same, so a message published on a
    channel with history was stored and never delivered live."""
    env, auth_port, ws_port = embedded_env(tmp_path, REDIS_URL=redis_url)
    auth = f"http://127.0.0.1:{auth_port}"
    channel = f"chat:embedded-{uuid.uuid4().hex[:8]}"
    with service("services", env, ws_port, tmp_path):
        async with aiohttp.ClientSession() as http:
            tokens = await sign_up(http, auth)
            async with http.ws_connect(f"ws://127.0.0.1:{ws_port}/ws") as ws:
                await ws.send_json({"type": "auth", "token": tokens["access_token"]})
                assert (await receive_json(ws))["type"] == "auth_success"
                await ws.send_json({"type": "subscribe", "channel": channel, "id": 1})
                assert (await receive_json(ws))["type"] == "subscribed"
                await ws.send_json({"type": "publish", "channel": channel, "data": "hi", "id": 2})
                frames = [await receive_json(ws) for _ in range(2)]
                message = next(f for f in frames if f["type"] == "message")
                assert (message["data"], message["offset"]) == ("hi", 1)
                await log_out(http, auth, tokens)
                assert (await receive_json(ws))["type"] == "revoked"
