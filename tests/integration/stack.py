"""Both real services on loopback sharing one in-process bus, the way ``python -m services`` runs
them: auth_service issues and revokes, ws_service verifies against its served JWKS."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from auth_service.appkeys import METRICS as AUTH_METRICS
from realtime_gateway_client import GatewayClient
from shared.bus import InProcessBus
from tests.integration.ws.harness import auth
from ws_service.appkeys import METRICS as WS_METRICS
from ws_service.appkeys import SOCKETS

PASSWORD = "correct horse battery staple"
API_KEY = "test-api-key-0123456789"

Client = TestClient[web.Request, web.Application]


@dataclass
class Stack:
    auth: Client
    ws: Client
    bus: InProcessBus
    users: dict[str, str] = field(default_factory=dict)
    """username -> user id, for the users registered through ``register``."""

    @property
    def auth_url(self) -> str:
        return str(self.auth.make_url(""))

    @property
    def ws_url(self) -> str:
        return str(self.ws.make_url("/ws"))

    async def register(self, *usernames: str) -> None:
        for username in usernames:
            resp = await self.auth.post(
                "/v1/register", json={"username": username, "password": PASSWORD}
            )
            assert resp.status == 201, await resp.text()
            self.users[username] = (await resp.json())["id"]

    async def login(self, username: str) -> dict[str, Any]:
        resp = await self.auth.post("/v1/login", json={"username": username, "password": PASSWORD})
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body

    async def refresh(self, refresh_token: str) -> tuple[int, dict[str, Any]]:
        resp = await self.auth.post(
            "/v1/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token}
        )
        return resp.status, await resp.json()

    async def logout(self, access_token: str, **body: Any) -> None:
        resp = await self.auth.post(
            "/v1/logout", json=body, headers={"Authorization": f"Bearer {access_token}"}
        )
        assert resp.status == 200, await resp.text()

    async def open(self) -> Any:
        return await self.ws.ws_connect("/ws")

    async def connect(self, access_token: str) -> tuple[Any, dict[str, Any]]:
        """An authenticated raw socket and its ``auth_success``."""
        ws = await self.open()
        reply = await auth(ws, access_token)
        assert reply["type"] == "auth_success", reply
        return ws, reply

    def client(self, username: str, password: str = PASSWORD) -> GatewayClient:
        return GatewayClient(
            self.auth_url, self.ws_url, username, password, backoff_base=0.05, backoff_cap=0.2
        )

    async def close_sockets(self, code: int, reason: str) -> None:
        """Close codes the real services only produce at awkward moments, forced server-side."""
        for peer in tuple(self.ws.app[SOCKETS]):
            peer.close(code, reason)
            await peer.wait_finished()

    def auth_count(self, name: str, **labels: str) -> float:
        return self.auth.app[AUTH_METRICS].registry.get_sample_value(name, labels) or 0.0

    def ws_count(self, name: str, **labels: str) -> float:
        return self.ws.app[WS_METRICS].registry.get_sample_value(name, labels) or 0.0


MakeStack = Callable[..., Awaitable[Stack]]
"""``make_stack(auth={...}, ws={...})``: overrides of each service's ``Settings`` fields."""

Overrides = Mapping[str, Any] | None
