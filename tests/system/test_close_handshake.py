"""The closing handshake across processes, under load: after a logout every client, however busy,
reads 4403 from ``ws.close_code`` (not 1006), because the server waits for its close frame."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from tests.integration.ws.test_close_handshake import chatty_client
from tests.system.procs import embedded_env, service

pytestmark = pytest.mark.system
PASSWORD = "correct horse battery staple"
SOCKETS = 150


async def test_logout_closes_every_busy_socket_with_4403(tmp_path: Path) -> None:
    env, auth_port, ws_port = embedded_env(
        tmp_path,
        WS_MAX_CONNECTIONS_PER_USER=str(SOCKETS),
        WS_RATE_PER_SECOND="100000",
        WS_RATE_BURST="100000",
    )
    auth = f"http://127.0.0.1:{auth_port}"
    with service("services", env, ws_port, tmp_path):
        connector = aiohttp.TCPConnector(limit=0)  # every socket holds a connection
        async with asyncio.timeout(60), aiohttp.ClientSession(connector=connector) as http:
            creds = {"username": "erin", "password": PASSWORD}
            async with http.post(f"{auth}/v1/register", json=creds) as resp:
                assert resp.status == 201
            async with http.post(f"{auth}/v1/login", json=creds) as resp:
                token = (await resp.json())["access_token"]
            sockets = []
            for _ in range(SOCKETS):
                ws = await http.ws_connect(f"ws://127.0.0.1:{ws_port}/ws")
                await ws.send_json({"type": "auth", "token": token})
                assert (await ws.receive_json(timeout=5))["type"] == "auth_success"
                sockets.append(ws)
            clients = [asyncio.ensure_future(chatty_client(ws)) for ws in sockets]
            await asyncio.sleep(0.2)
            async with http.post(
                f"{auth}/v1/logout", headers={"Authorization": f"Bearer {token}"}
            ) as resp:
                assert resp.status == 200
            codes = await asyncio.wait_for(asyncio.gather(*clients), 20)
    assert {code: codes.count(code) for code in set(codes)} == {4403: SOCKETS}
