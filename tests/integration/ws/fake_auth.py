"""Just enough of auth_service for the client tests: login, rotating refresh tokens, JWKS.

To be replaced by the real auth_service app once it is merged.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from aiohttp import web

from tests.integration.ws.harness import KeySet, Tokens


@dataclass
class FakeAuth:
    tokens: Tokens
    keyset: KeySet
    passwords: dict[str, str]
    ttl: int = 300
    refreshes: int = 0
    refresh_tokens: dict[str, str] = field(default_factory=dict)

    def _issue(self, sub: str) -> web.Response:
        refresh = secrets.token_urlsafe(32)
        self.refresh_tokens[refresh] = sub
        return web.json_response(
            {
                "access_token": self.tokens.make(sub, ttl=self.ttl),
                "refresh_token": refresh,
                "token_type": "Bearer",
                "expires_in": self.ttl,
            }
        )

    async def login(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.passwords.get(body.get("username")) != body.get("password"):
            return web.json_response(
                {"error": "invalid_grant", "error_description": "bad credentials"}, status=401
            )
        return self._issue(body["username"])

    async def token(self, request: web.Request) -> web.Response:
        body = await request.json()
        sub = self.refresh_tokens.pop(body.get("refresh_token"), None)
        if body.get("grant_type") != "refresh_token" or sub is None:
            return web.json_response({"error": "invalid_grant"}, status=400)
        self.refreshes += 1
        return self._issue(sub)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/login", self.login)
        app.router.add_post("/v1/token", self.token)
        app.router.add_get("/.well-known/jwks.json", self.keyset.handle)
        return app
