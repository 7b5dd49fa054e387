"""What the system scenarios say to the services: accounts and tokens over HTTP, WebSocket frames
with timeouts, and the publish API."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import jwt

from tests.system.cluster import API_KEY

PASSWORD = "correct horse battery staple"
_ids = itertools.count(1)


def channel() -> str:
    return f"chat:room-{uuid.uuid4().hex[:12]}"


async def tokens_for(http: aiohttp.ClientSession, base: str, username: str) -> dict[str, Any]:
    creds = {"username": username, "password": PASSWORD}
    async with http.post(f"{base}/v1/register", json=creds) as resp:
        assert resp.status in (201, 409), await resp.text()
    async with http.post(f"{base}/v1/login", json=creds) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


def sub_of(tokens: dict[str, Any]) -> str:
    return str(jwt.decode(tokens["access_token"], options={"verify_signature": False})["sub"])


async def frame(ws: aiohttp.ClientWebSocketResponse, within: float = 5) -> dict[str, Any]:
    async with asyncio.timeout(within):
        message = await ws.receive()
    assert message.type == aiohttp.WSMsgType.TEXT, (message.type, message.data, message.extra)
    body: dict[str, Any] = message.json()
    return body


async def expect_close(ws: aiohttp.ClientWebSocketResponse, within: float = 5) -> tuple[int, str]:
    async with asyncio.timeout(within):
        while True:
            message = await ws.receive()
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return int(message.data or ws.close_code or 0), str(message.extra or "")


async def request(
    ws: aiohttp.ClientWebSocketResponse,
    body: dict[str, Any],
    others: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Send a frame with a fresh id and return the reply that echoes it; the frames received
    before it go to ``others`` (dropped without it)."""
    body = {**body, "id": next(_ids)}
    await ws.send_json(body)
    while True:
        reply = await frame(ws)
        if reply.get("id") == body["id"]:
            return reply
        if others is not None:
            others.append(reply)


@asynccontextmanager
async def connected(
    http: aiohttp.ClientSession, url: str, token: str
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with http.ws_connect(url) as ws:
        await ws.send_json({"type": "auth", "token": token})
        welcome = await frame(ws)
        assert welcome["type"] == "auth_success", welcome
        yield ws


async def publish_api(http: aiohttp.ClientSession, url: str, ch: str, data: Any) -> None:
    async with http.post(
        url, json={"channel": ch, "data": data}, headers={"Authorization": f"Bearer {API_KEY}"}
    ) as resp:
        assert resp.status == 202, await resp.text()
