"""Whatever a client sends, the services' output never holds a credential: the embedded stack runs
at DEBUG, every handshake is driven (good and bad), then its whole stdout and stderr are scanned."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.system.procs import embedded_env, service
from tests.system.wire import PASSWORD, expect_close, frame

pytestmark = pytest.mark.system

JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


async def upgrade(
    http: aiohttp.ClientSession, url: str, protocols: str = ""
) -> tuple[int, dict[str, Any]]:
    """A raw upgrade request: its status and, when refused, its JSON body."""
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }
    if protocols:
        headers["Sec-WebSocket-Protocol"] = protocols
    async with http.get(url, headers=headers) as resp:
        return resp.status, (await resp.json() if resp.status != 101 else {})


async def drive_every_handshake(auth: str, ws_url: str) -> list[str]:
    """Every way a credential reaches the stack; returns every credential it saw."""
    async with aiohttp.ClientSession() as http:
        creds = {"username": "erin", "password": PASSWORD}
        async with http.post(f"{auth}/v1/register", json=creds) as resp:
            assert resp.status == 201, await resp.text()
        async with http.post(f"{auth}/v1/login", json=creds) as resp:
            tokens = await resp.json()
        access = tokens["access_token"]
        header, payload, signature = access.split(".")
        forged = f"{header}.{payload}.{signature[::-1]}"
        async with http.post(
            f"{auth}/v1/token",
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        ) as resp:
            renewed = await resp.json()
        seen = [access, forged, tokens["refresh_token"], renewed["access_token"]]

        async with http.ws_connect(ws_url) as ws:  # in-band auth, then renewal
            await ws.send_json({"type": "auth", "token": access})
            assert (await frame(ws))["type"] == "auth_success"
            await ws.send_json({"type": "auth", "token": renewed["access_token"]})
            assert (await frame(ws))["renewed"] is True
            await ws.send_json({"type": "auth", "token": forged})
            assert (await frame(ws))["type"] == "auth_error"
        async with http.ws_connect(ws_url) as ws:  # a bad token in-band
            await ws.send_json({"type": "auth", "token": forged})
            assert (await frame(ws))["code"] == "invalid_token"
            assert (await expect_close(ws))[0] == 4401
        async with http.ws_connect(ws_url, protocols=("realtime.v1", f"realtime.bearer.{access}")):
            pass
        for offer in (
            f"realtime.bearer.{access}",
            f"realtime.v2, realtime.bearer.{access}",
            f"realtime.v1, realtime.bearer.{forged}",
            f"chat, {access}",
        ):
            await upgrade(http, ws_url, offer)
        for _ in range(2):  # a ticket, then its replay
            async with http.post(
                f"{auth}/v1/ws-ticket", headers={"Authorization": f"Bearer {access}"}
            ) as resp:
                ticket = (await resp.json())["ticket"]
            seen.append(ticket)
            assert (await upgrade(http, f"{ws_url}?ticket={ticket}"))[0] == 101
            assert (await upgrade(http, f"{ws_url}?ticket={ticket}"))[0] == 401
        for query in (f"token={access}", f"access_token={access}", f"ticket={access}"):
            assert (await upgrade(http, f"{ws_url}?{query}"))[0] == 401
        async with http.post(
            f"{auth}/v1/logout", headers={"Authorization": f"Bearer {forged}"}
        ) as resp:
            assert resp.status == 401
        async with http.post(
            f"{auth}/v1/logout", headers={"Authorization": f"Bearer {renewed['access_token']}"}
        ) as resp:
            assert resp.status == 200
        assert (await upgrade(http, ws_url, f"realtime.v1, realtime.bearer.{access}"))[0] == 401
        return seen


async def test_no_token_or_ticket_reaches_the_log(tmp_path: Path) -> None:
    env, auth_port, ws_port = embedded_env(tmp_path, LOG_LEVEL="DEBUG", AUTH_LOG_LEVEL="DEBUG")
    with service("services", env, ws_port, tmp_path) as proc:
        seen = await drive_every_handshake(
            f"http://127.0.0.1:{auth_port}", f"http://127.0.0.1:{ws_port}/ws"
        )
    log = proc.log_path.read_text(errors="replace")
    assert "ws_handshake_refused" in log  # the log is the one the handshakes wrote
    tails = [credential[-16:] for credential in seen]
    leaking = [
        JWT.sub("<JWT>", line)[:300]
        for line in log.splitlines()
        if JWT.search(line) or any(tail in line for tail in tails)
    ]
    assert leaking == []
