"""What the example asks of the gateway: tokens for its users from auth_service (RFC 8693 token
exchange of an assertion signed with its client secret; client_secret_basic), the end of a
user's sessions, and the server API of ws_service (an API key).

The example's user 7 is ``notes:7`` at the gateway: the client id, a colon, the app's own id.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import aiohttp
import jwt

from examples.app_backend.settings import Settings

__all__ = ["MAX_LISTED", "Gateway", "GatewayError", "channel_of", "channels_for", "document_of"]

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 (a URN)
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
MAX_LISTED = 64
"""Channels one grant may list; a user with more documents gets ``doc:*`` and the subscribe proxy
alone decides which."""
ACTIONS = ["subscribe", "publish"]


class GatewayError(Exception):
    """auth_service or ws_service refused (``code``: its error code) or could not be reached."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


def channel_of(document_id: int) -> str:
    return f"doc:{document_id}"


def channels_for(documents: list[int]) -> list[str]:
    """What a user's grant lists: their documents' channels, or ``doc:*`` beyond one grant's
    64 (the subscribe proxy then decides alone)."""
    return [channel_of(d) for d in documents] if len(documents) <= MAX_LISTED else ["doc:*"]


def document_of(channel: str) -> int | None:
    namespace, _, name = channel.partition(":")
    return (
        int(name)
        if namespace == "doc" and name.isascii() and name.isdigit() and len(name) < 19
        else None
    )


class Gateway:
    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self._session = session
        self._settings = settings
        self._client = aiohttp.BasicAuth(settings.client_id, settings.client_secret)
        self._api_key = {"Authorization": f"Bearer {settings.api_key}"}

    def subject(self, user_id: int) -> str:
        return f"{self._settings.client_id}:{user_id}"

    def user_id(self, subject: str) -> int | None:
        """The example's user id of a gateway subject; None for anyone else's."""
        client, colon, user = subject.partition(":")
        if (
            not colon
            or client != self._settings.client_id
            or not (user.isascii() and user.isdigit())
        ):
            return None
        return int(user)

    async def exchange(self, user_id: int, username: str, channels: list[str]) -> dict[str, Any]:
        """A new gateway session for the user, allowed to subscribe and publish to ``channels``
        and nothing else (an empty scope; ``user:<sub>`` is always theirs)."""
        settings = self._settings
        now = int(time.time())
        assertion = jwt.encode(
            {
                "iss": settings.client_id,
                "aud": settings.auth_issuer,
                "sub": str(user_id),
                "exp": now + 60,
                "jti": uuid.uuid4().hex,
                "preferred_username": username,
            },
            settings.client_secret,
            algorithm="HS256",
        )
        form = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": assertion,
            "subject_token_type": JWT_TYPE,
            "scope": "",
        }
        if channels:
            grant = {"type": "realtime_channels", "channels": channels, "actions": ACTIONS}
            form["authorization_details"] = json.dumps([grant])
        return await self._token(form)

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        """New tokens of the same session (the same grant); the refresh token rotates."""
        return await self._token({"grant_type": "refresh_token", "refresh_token": refresh_token})

    async def revoke(self, refresh_token: str) -> None:
        """RFC 7009: the session ends; its sockets close (4403 session_revoked)."""
        url = f"{self._settings.auth_url}/v1/revoke"
        await self._call("POST", url, data={"token": refresh_token}, auth=self._client)

    async def end_sessions(self, user_id: int) -> int:
        """Every gateway session of the user ends; their sockets close (4403 session_revoked)."""
        answer = await self._call(
            "POST",
            f"{self._settings.auth_url}/v1/sessions/revoke",
            data={"sub": self.subject(user_id)},
            auth=self._client,
        )
        return int(answer["revoked_sessions"])

    async def unsubscribe(self, user_id: int, channel: str) -> None:
        """The user's sockets leave the channel now, on every replica."""
        await self._api("/v1/unsubscribe", {"user": self.subject(user_id), "channel": channel})

    async def notify(self, user_id: int, data: dict[str, Any]) -> None:
        """A message on the user's own channel, ``user:<sub>``, which only the server publishes to."""
        await self._api("/v1/publish", {"channel": f"user:{self.subject(user_id)}", "data": data})

    async def _token(self, form: dict[str, str]) -> dict[str, Any]:
        url = f"{self._settings.auth_url}/v1/token"
        return await self._call("POST", url, data=form, auth=self._client)

    async def _api(self, path: str, body: dict[str, Any]) -> None:
        url = f"{self._settings.gateway_url}{path}"
        await self._call("POST", url, json=body, headers=self._api_key)

    async def _call(self, method: str, url: str, **options: Any) -> dict[str, Any]:
        try:
            async with self._session.request(method, url, **options) as response:
                answer: dict[str, Any] = await response.json(content_type=None)
                if response.status >= 300:
                    code = answer.get("error")
                    raise GatewayError(f"{url}: {response.status} {code}", code)
                return answer
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise GatewayError(f"{url}: {exc!r}") from None
