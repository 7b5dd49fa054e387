"""The server API: what the app's backend does to channels and connections, with an API key.

Every endpoint needs one of ``WS_API_KEYS`` (compared in constant time) and answers JSON. Actions
and counts reach every replica through the ``ControlPlane``: a call made to any replica acts on the
sockets of all of them. Users the gateway does not know are not an error: their counts are 0.
ws_service/openapi.json (served at ``/openapi.json``) describes each endpoint, and the fuzzer runs
against it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from realtime_gateway_protocol.wire_json import WireJSONError, loads
from shared.bus import BusUnavailable
from shared.http.auth import authorization, bearer_matches
from shared.http.coding import content_coding_refusal, media_type_refusal
from shared.http.forwarded import client_address, forwarded_for
from shared.http.responses import HTTP_ERROR_CODES, json_error, json_response
from shared.http.urlencoded import UrlencodedError, strict_pairs
from shared.jsonlog import audit
from ws_service.appkeys import CONTROL, GATEWAY, SETTINGS
from ws_service.domain.commands import DisconnectUser, SubscribeUser, UnsubscribeUser
from ws_service.domain.errors import Forbidden, HistoryFull, InvalidChannel, Unconfirmed
from ws_service.domain.namespaces import validate_channel

__all__ = ["ROUTES"]

CONTROL_BODY_BYTES = 4096
"""The largest body of a call that carries no payload (disconnect, subscribe, unsubscribe)."""
MAX_BROADCAST_CHANNELS = 100
PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_MAX_ID = 256
_JSON = ("application/json",)
MAX_QUERY_FIELDS = 16
"""More parameters than any endpoint takes, by far: a query past it is refused unread."""

Handler = Callable[[web.Request], Awaitable[web.Response]]


class _Refusal(Exception):
    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description


def _bad(description: str, code: str = "bad_request") -> _Refusal:
    return _Refusal(400, code, description)


def _api_call(handler: Handler) -> Handler:
    """The API key, then the handler; a refusal becomes its JSON error, and Redis down a 503."""

    @functools.wraps(handler)
    async def call(request: web.Request) -> web.Response:
        settings = request.app[SETTINGS]
        if not settings.api_keys:
            return json_error(
                403,
                "publish_disabled",
                "the server API is disabled: set WS_API_KEYS (a comma list of keys of 16+ "
                "characters)",
            )
        if not bearer_matches(authorization(request.headers), settings.api_keys):
            # Behind a trusted proxy, the caller's forwarded address (the proxy's is everyone's).
            remote = client_address(
                request.remote, forwarded_for(request.headers), settings.forwarded_allow_ips
            )
            audit("ws_api_unauthorized", remote=remote, path=request.path)
            return json_error(
                401, "invalid_token", "a valid API key is required", {"WWW-Authenticate": "Bearer"}
            )
        try:
            return await handler(request)
        except _Refusal as refusal:
            return json_error(refusal.status, refusal.code, refusal.description)
        except InvalidChannel as err:
            return json_error(400, err.code, err.message)
        except Forbidden as err:
            return json_error(403, err.code, err.message)
        except BusUnavailable:
            return json_error(
                503, "unavailable", "Redis cannot be reached: nothing was done; try again"
            )

    return call


async def _body(request: web.Request, limit: int | None, shape: str) -> dict[str, Any]:
    """The JSON object of the body, at most ``limit`` bytes (else aiohttp's client_max_size)."""
    if limit is not None and (request.content_length or 0) > limit:
        raise _Refusal(413, HTTP_ERROR_CODES[413], f"the body is limited to {limit} bytes")
    refusal = content_coding_refusal(request) or media_type_refusal(request, _JSON)
    if refusal is not None:
        raise _Refusal(415, HTTP_ERROR_CODES[415], refusal)
    try:
        async with asyncio.timeout(request.app[SETTINGS].http_timeout):
            raw = await request.read()
    except TimeoutError:
        raise _Refusal(408, "request_timeout", "the request body did not arrive in time") from None
    if limit is not None and len(raw) > limit:
        raise _Refusal(413, HTTP_ERROR_CODES[413], f"the body is limited to {limit} bytes")
    try:
        body: Any = loads(raw, unique_keys=True)
    except WireJSONError as err:
        raise _bad(f"the body must be a JSON object: {err}") from None
    if not isinstance(body, dict):
        raise _bad(f"the body must be {shape}")
    return body


def _fields(body: dict[str, Any], required: set[str], optional: set[str], shape: str) -> None:
    if not required <= set(body) <= required | optional:
        raise _bad(f"the body must be {shape}")


def _identifier(value: object, name: str) -> str:
    """A user id (``sub``) or session id (``sid``): printable, at most 256 characters."""
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_ID or not value.isprintable():
        raise _bad(f"{name} must be a non-empty printable string of at most {_MAX_ID} characters")
    return value


# -- actions -------------------------------------------------------------------------------------


@_api_call
async def publish(request: web.Request) -> web.Response:
    """Server-side push to any channel, ``user:<id>`` included; messages carry ``from: null``."""
    body = await _body(request, None, '{"channel": ..., "data": ...}')
    if "data" not in body:
        raise _bad('the body must be {"channel": ..., "data": ...}')
    channel = validate_channel(body.get("channel"))
    try:
        await request.app[GATEWAY].hub.publish(channel, body["data"], None)
    except (Unconfirmed, HistoryFull) as err:
        raise _Refusal(503, err.code, err.message) from None
    return json_response({"published": True, "channel": channel}, status=202)


@_api_call
async def broadcast(request: web.Request) -> web.Response:
    """One payload to many channels: each is published as ``POST /v1/publish`` would."""
    shape = f'{{"channels": [1 to {MAX_BROADCAST_CHANNELS} channels], "data": ...}}'
    body = await _body(request, None, shape)
    _fields(body, {"channels", "data"}, set(), shape)
    channels = body["channels"]
    if not isinstance(channels, list) or not 0 < len(channels) <= MAX_BROADCAST_CHANNELS:
        raise _bad(f"the body must be {shape}")
    names = list(dict.fromkeys(validate_channel(channel) for channel in channels))
    hub = request.app[GATEWAY].hub
    published: list[str] = []
    failed: list[dict[str, str]] = []
    for channel in names:
        try:
            await hub.publish(channel, body["data"], None)
        except (Unconfirmed, HistoryFull) as err:
            failed.append({"channel": channel, "error": err.code})
        else:
            published.append(channel)
    return json_response({"published": published, "failed": failed}, status=202)


@_api_call
async def disconnect(request: web.Request) -> web.Response:
    shape = '{"user": ..., "session": ... (optional)}'
    body = await _body(request, CONTROL_BODY_BYTES, shape)
    _fields(body, {"user"}, {"session"}, shape)
    user = _identifier(body["user"], "user")
    session = None if body.get("session") is None else _identifier(body["session"], "session")
    counted = await request.app[CONTROL].count(DisconnectUser(user, session))
    answer = {"user": user, "disconnected": counted.count, "complete": counted.complete}
    if session is not None:
        answer["session"] = session
    audit("ws_api_disconnect", user=user, session=session, sockets=counted.count)
    return json_response(answer)


@_api_call
async def unsubscribe(request: web.Request) -> web.Response:
    user, channel = await _user_and_channel(request)
    counted = await request.app[CONTROL].count(UnsubscribeUser(user, channel))
    return json_response(
        {
            "user": user,
            "channel": channel,
            "unsubscribed": counted.count,
            "complete": counted.complete,
        }
    )


@_api_call
async def subscribe(request: web.Request) -> web.Response:
    user, channel = await _user_and_channel(request)
    if not request.app[GATEWAY].hub.namespaces.of(channel).server_may_subscribe(user, channel):
        raise Forbidden("a user channel can be subscribed for its own user only")
    counted = await request.app[CONTROL].count(SubscribeUser(user, channel))
    return json_response(
        {
            "user": user,
            "channel": channel,
            "subscribed": counted.count,
            "complete": counted.complete,
        }
    )


async def _user_and_channel(request: web.Request) -> tuple[str, str]:
    shape = '{"user": ..., "channel": ...}'
    body = await _body(request, CONTROL_BODY_BYTES, shape)
    _fields(body, {"user", "channel"}, set(), shape)
    return _identifier(body["user"], "user"), validate_channel(body["channel"])


# -- reads ---------------------------------------------------------------------------------------


@_api_call
async def presence(request: web.Request) -> web.Response:
    """Who is in a channel of a presence namespace, on every replica (as the ``presence`` frame)."""
    channel = validate_channel(_query(request, "channel", required=True))
    hub = request.app[GATEWAY].hub
    if not hub.namespaces.of(channel).presence:
        raise _bad("this channel's namespace has no presence (WS_PRESENCE)", "not_enabled")
    members = await hub.members(channel)
    return json_response(
        {
            "channel": channel,
            "members": [
                {"user": {"id": m.id, "username": m.username}, "connections": n} for m, n in members
            ],
        }
    )


@_api_call
async def channels(request: web.Request) -> web.Response:
    """The channels with at least one subscribed socket, in name order, a page at a time."""
    prefix = _query(request, "prefix") or ""
    if len(prefix) > 128 or (prefix and not _PREFIX_CHARS.issuperset(prefix)):
        raise _bad("prefix must be at most 128 characters of [A-Za-z0-9_.:@-]")
    cursor = _query(request, "cursor")
    after = "" if cursor is None else validate_channel(cursor)
    limit = _query(request, "limit")
    size = PAGE_SIZE if limit is None else _page_size(limit)
    page = await request.app[CONTROL].channels(prefix, after, size)
    return json_response(
        {
            "channels": [{"channel": name, "subscribers": n} for name, n in page.channels],
            "cursor": page.cursor,
            "complete": page.complete,
        }
    )


@_api_call
async def connections(request: web.Request) -> web.Response:
    """A user's authenticated sockets on every replica, by session."""
    user = _identifier(_query(request, "user", required=True), "user")
    found = await request.app[CONTROL].connections(user)
    return json_response(
        {
            "user": user,
            "connections": sum(found.sessions.values()),
            "sessions": [
                {"session": sid or None, "connections": n}  # null: a token without a sid
                for sid, n in found.sessions.items()
            ],
            "complete": found.complete,
        }
    )


_PREFIX_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:@-")


def _query(request: web.Request, name: str, *, required: bool = False) -> str | None:
    """One query parameter, decoded strictly: aiohttp's ``request.query`` reads invalid UTF-8
    as U+FFFD, which a body in invalid UTF-8 is refused for."""
    try:
        pairs = strict_pairs(
            request.rel_url.raw_query_string, max_fields=MAX_QUERY_FIELDS, what="query"
        )
    except UrlencodedError as exc:
        raise _bad(str(exc)) from None
    values = [value for key, value in pairs if key == name]
    if len(values) > 1:
        raise _bad(f"{name} must be given once")
    if not values:
        if required:
            raise _bad(f"the query needs {name}")
        return None
    return values[0]


def _page_size(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4) or not 0 < int(raw) <= MAX_PAGE_SIZE:
        raise _bad(f"limit must be an integer from 1 to {MAX_PAGE_SIZE}")
    return int(raw)


ROUTES = [
    web.post("/v1/publish", publish),
    web.post("/v1/broadcast", broadcast),
    web.post("/v1/disconnect", disconnect),
    web.post("/v1/subscribe", subscribe),
    web.post("/v1/unsubscribe", unsubscribe),
    web.get("/v1/presence", presence, allow_head=False),
    web.get("/v1/channels", channels, allow_head=False),
    web.get("/v1/connections", connections, allow_head=False),
]
