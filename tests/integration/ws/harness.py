"""Test doubles that are real: an RSA key set served over HTTP, pyjwt-signed tokens, a live app."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from jwt.algorithms import RSAAlgorithm

from realtime_gateway_protocol.access_token import ACCESS_TOKEN_TYP, ALGORITHM, AccessTokenPayload
from shared.bus import EventBus
from ws_service.domain.verify import NEW_KEY_SETTLE

ISSUER = "http://auth.test:8081"
AUDIENCE = "ws"


def long_ago() -> int:
    """An ``iat`` older than ``NEW_KEY_SETTLE``: a kid the key set lacks is then no key of the
    issuer's (``invalid_token``), where for a token just issued it may be one not loaded yet."""
    return int(time.time() - NEW_KEY_SETTLE - 5)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class KeySet:
    """The issuer's JWKS endpoint: counts fetches, can fail on demand."""

    keys: dict[str, RSAPrivateKey]
    fetches: int = 0
    fail: bool = False
    cache_control: str = "public, max-age=300"

    def document(self) -> dict[str, Any]:
        jwks = []
        for kid, key in self.keys.items():
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            jwks.append({**jwk, "kid": kid, "use": "sig", "alg": ALGORITHM})
        return {"keys": jwks}

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.fail:
            return web.json_response({"error": "down"}, status=503)
        return web.json_response(self.document(), headers={"Cache-Control": self.cache_control})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self.handle)
        return app


@dataclass
class Tokens:
    """Mints access tokens the way auth_service does; every knob can be turned for attacks."""

    key: RSAPrivateKey
    kid: str
    issuer: str = ISSUER
    audience: str | list[str] = AUDIENCE

    def claims(
        self, sub: str | None = "alice", *, ttl: float = 300, **overrides: Any
    ) -> dict[str, Any]:
        """The issuer's claims set; ``sub=None`` or an override of ``None`` leaves a claim out."""
        now = int(time.time())
        payload: AccessTokenPayload = {
            "iss": self.issuer,
            "sub": sub or "",
            "aud": self.audience,
            "iat": now,
            "exp": int(now + ttl),
            "jti": uuid.uuid4().hex,
            "sid": f"sid-{sub}",
            "scope": "chat:read chat:write",
        }
        if sub:
            payload["preferred_username"] = sub.title()
        claims: dict[str, Any] = {**payload, "sub": sub, **overrides}
        return {k: v for k, v in claims.items() if v is not None}

    def make(
        self,
        sub: str | None = "alice",
        *,
        ttl: float = 300,
        key: RSAPrivateKey | None = None,
        algorithm: str = ALGORITHM,
        headers: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> str:
        header: dict[str, Any] = {"typ": ACCESS_TOKEN_TYP, "kid": self.kid}
        header.update(headers or {})
        header = {k: v for k, v in header.items() if v is not None}
        return jwt.encode(
            self.claims(sub, ttl=ttl, **overrides),
            key or self.key,
            algorithm=algorithm,
            headers=header,
        )

    def unsigned(self, header: dict[str, Any], claims: dict[str, Any], signature: bytes) -> str:
        """Hand-built tokens for algorithms pyjwt refuses to produce (none, HS256 with a PEM)."""
        head = b64(json.dumps(header).encode())
        body = b64(json.dumps(claims).encode())
        return f"{head}.{body}.{b64(signature)}"


@dataclass
class Harness:
    client: TestClient[web.Request, web.Application]
    app: web.Application
    bus: EventBus
    keyset: KeySet
    tokens: Tokens
    jwks_server: TestServer
    opened: list[Any] = field(default_factory=list)

    async def open(self, origin: str | None = None) -> Any:
        headers = {"Origin": origin} if origin else {}
        ws = await self.client.ws_connect("/ws", headers=headers)
        self.opened.append(ws)
        return ws

    async def login(self, sub: str = "alice", token: str | None = None, **claims: Any) -> Any:
        """An authenticated socket."""
        ws = await self.open()
        reply = await auth(ws, token or self.tokens.make(sub, **claims))
        assert reply["type"] == "auth_success", reply
        return ws


async def send(ws: Any, frame: dict[str, Any]) -> None:
    await ws.send_str(json.dumps(frame))


async def recv(ws: Any, wait: float = 3.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=wait)
    assert msg.type is WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
    frame: dict[str, Any] = json.loads(msg.data)
    return frame


async def auth(ws: Any, token: str, **extra: Any) -> dict[str, Any]:
    await send(ws, {"type": "auth", "token": token, **extra})
    return await recv(ws)


async def expect_close(ws: Any, code: int, reason: str, wait: float = 3.0) -> None:
    """The next frame is the server's close with this code and reason."""
    msg = await ws.receive(timeout=wait)
    assert msg.type is WSMsgType.CLOSE, (msg.type, msg.data)
    assert (msg.data, msg.extra) == (code, reason)


async def expect_open(ws: Any) -> None:
    """The socket still answers: a ping gets its pong."""
    await send(ws, {"type": "ping", "id": "alive"})
    assert await recv(ws) == {"type": "pong", "id": "alive"}


async def wait_until(predicate: Any, wait: float = 3.0) -> None:
    deadline = time.monotonic() + wait
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
