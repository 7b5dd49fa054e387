"""The application's subscribe and publish proxies over HTTP: the domain's ``AppProxy``.

Every call is a POST of ``{"action", "user", "session", "channel", "data" (publish only), "id"}``
signed with ``Gateway-Signature`` (``realtime_gateway_protocol/signatures.py``). The answer must be
a 200 whose body is a strict JSON object ``{"allow": true|false, "reason"?: string, "data"?: any}``
of at most ``max_answer_bytes``. Anything else (no connection, an error status or a redirect, a
malformed or larger answer, no answer within the timeout, the wait for a free slot included) is
``ProxyUnavailable``: the gateway fails closed. Bodies are never decompressed (``Accept-Encoding:
identity``; a compressed answer is malformed), so a small answer cannot unpack into a large one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
from aiohttp import hdrs

from realtime_gateway_protocol import wire_json
from realtime_gateway_protocol.signatures import HEADER, sign
from shared.config.env import redact_url
from shared.http.client import IDENTITY, read_capped
from ws_service.domain.errors import ProxyUnavailable
from ws_service.domain.proxy import ProxyCall, Verdict

__all__ = ["MAX_REASON", "HttpAppProxy", "open_proxy_session"]

MAX_REASON = 256
"""Characters of a denial's ``reason``, which the client sees as the error's ``message``."""

log = logging.getLogger(__name__)


def open_proxy_session(max_in_flight: int) -> aiohttp.ClientSession:
    """A session of its own: no cookie jar (one user's cookie must never ride on another's
    question), no decompression, at most ``max_in_flight`` connections."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max_in_flight),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    )


class HttpAppProxy:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        secrets: Sequence[str],
        *,
        timeout: float,
        max_in_flight: int,
        max_answer_bytes: int,
        on_outcome: Callable[[str, str], None] | None = None,
    ) -> None:
        self._session = session
        self._secrets = tuple(secrets)
        self._timeout = timeout
        self._slots = asyncio.Semaphore(max_in_flight)
        self._max_bytes = max_answer_bytes
        self._on_outcome = on_outcome or (lambda action, outcome: None)

    async def ask(self, call: ProxyCall) -> Verdict:
        try:
            async with asyncio.timeout(self._timeout):
                async with self._slots:
                    verdict = _verdict(await self._post(call.url, _body(call)))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._on_outcome(call.action, "unavailable")
            log.warning(
                "the application's proxy gave no answer",
                extra={
                    "url": redact_url(call.url),
                    "action": call.action,
                    "error": str(exc) or repr(exc),
                },
            )
            raise ProxyUnavailable() from None
        self._on_outcome(call.action, "allow" if verdict.allow else "deny")
        return verdict

    async def _post(self, url: str, body: bytes) -> bytes:
        headers = {
            HEADER: sign(body, self._secrets),
            hdrs.CONTENT_TYPE: "application/json",
            **IDENTITY,
        }
        async with self._session.post(
            url, data=body, headers=headers, allow_redirects=False
        ) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            return await read_capped(response, self._max_bytes)


def _body(call: ProxyCall) -> bytes:
    claims = call.claims
    fields: dict[str, Any] = {
        "action": call.action,
        "user": {"id": claims.sub, "username": claims.username},
        "session": claims.sid or None,
        "channel": call.channel,
    }
    if call.action == "publish":
        fields["data"] = call.data
    fields["id"] = uuid.uuid4().hex
    return wire_json.dumps(fields).encode()


def _verdict(raw: bytes) -> Verdict:
    """The answer, strictly: ``ValueError`` for anything but the documented object."""
    answer = wire_json.loads(raw, unique_keys=True)
    if not isinstance(answer, dict) or not isinstance(answer.get("allow"), bool):
        raise ValueError('the answer must be a JSON object with "allow": true or false')
    reason = answer.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON):
        raise ValueError(f"reason must be a string of at most {MAX_REASON} characters")
    return Verdict(answer["allow"], reason, "data" in answer, answer.get("data"))
