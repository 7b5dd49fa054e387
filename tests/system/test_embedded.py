"""The embedded stack behind `make run`: one process, both services, one in-process bus."""

from __future__ import annotations

import asyncio
import ssl
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
            creds = {"username": "erin", "password": PASSWORD}
            async with http.post(f"{auth}/v1/register", json=creds) as resp:
                assert resp.status == 201
            async with http.post(f"{auth}/v1/login", json=creds) as resp:
                tokens = await resp.json()
            async with http.ws_connect(f"wss://localhost:{ws_port}/ws", ssl=tls) as ws:
                await ws.send_json({"type": "auth", "token": tokens["access_token"]})
                welcome = await receive_json(ws)
                assert welcome["type"] == "auth_success"
                assert welcome["user"]["username"] == "erin"
                async with http.post(
                    f"{auth}/v1/logout",
                    headers={"Authorization": f"Bearer {tokens['access_token']}"},
                ) as resp:
                    assert resp.status == 200
                assert (await receive_json(ws))["type"] == "revoked"
                async with asyncio.timeout(2):
                    closed = await ws.receive()
                assert closed.type == aiohttp.WSMsgType.CLOSE
                assert (closed.data, closed.extra) == (4403, "session_revoked")
