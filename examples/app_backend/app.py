"""The example's application factory and its routes.

Three kinds of caller: the app's users (a session cookie of the app's own, JSON in and out, under
``/api/``), and the gateway, whose calls (``/rt/``: the subscribe and publish proxies, the
webhooks) are signed with ``Gateway-Signature`` and checked before anything is read.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from examples.app_backend import db
from examples.app_backend.gateway import (
    Gateway,
    GatewayError,
    channel_of,
    channels_for,
    document_of,
)
from examples.app_backend.settings import Settings
from realtime_gateway_protocol.signatures import HEADER, verify

__all__ = ["DB", "GATEWAY", "SETTINGS", "create_app"]

log = logging.getLogger("notes")

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", db.Database)
GATEWAY = web.AppKey("gateway", Gateway)

COOKIE = "notes_session"
SESSION_LIFETIME = 7 * 86400
MAX_TEXT = 2000
MAX_BODY = 1024 * 1024
"""A webhook body (WS_WEBHOOK_BATCH_BYTES, 512 KiB, or one larger event) fits: a body answered
413 comes back halved, and an event refused alone is dropped."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
routes = web.RouteTableDef()


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Refused as exc:
        return web.json_response({"error": exc.code, "message": exc.message}, status=exc.status)
    except GatewayError as exc:
        log.warning("the gateway refused or is unreachable: %s", exc)
        return web.json_response(
            {"error": "gateway_unavailable", "message": "the realtime gateway did not answer"},
            status=502,
        )


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY)
    app[SETTINGS] = settings

    async def database(app: web.Application) -> AsyncIterator[None]:
        app[DB] = db.Database(settings.database)
        await app[DB].open()
        yield
        await app[DB].close()

    async def gateway(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            app[GATEWAY] = Gateway(session, settings)
            yield

    app.cleanup_ctx.extend([database, gateway])
    app.add_routes(routes)
    return app


# -- the app's own login ---------------------------------------------------------------------


def _hash_password(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)


async def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = await asyncio.to_thread(_hash_password, password, salt)
    return f"{salt.hex()}${digest.hex()}"


async def password_matches(password: str, stored: str) -> bool:
    salt, _, digest = stored.partition("$")
    computed = await asyncio.to_thread(_hash_password, password, bytes.fromhex(salt))
    return hmac.compare_digest(computed.hex(), digest)


def _token_hash(request: web.Request) -> str | None:
    token = request.cookies.get(COOKIE)
    return None if token is None else hashlib.sha256(token.encode()).hexdigest()


async def current_user(request: web.Request) -> db.User:
    token_hash = _token_hash(request)
    user = (
        None
        if token_hash is None
        else await request.app[DB].run(db.session_user, token_hash, time.time())
    )
    if user is None:
        raise Refused(401, "not_logged_in", "log in first (POST /api/login)")
    return user


async def fields(request: web.Request, *names: str) -> list[str]:
    """The named string fields of the JSON body."""
    try:
        body = await request.json()
    except ValueError:
        raise Refused(400, "bad_request", "the body must be JSON") from None
    if not isinstance(body, dict) or not all(isinstance(body.get(n), str) for n in names):
        raise Refused(400, "bad_request", f"the body must be an object with {', '.join(names)}")
    return [body[name] for name in names]


async def logged_in(request: web.Request, user: db.User, status: int = 200) -> web.Response:
    token = secrets.token_urlsafe(32)
    await request.app[DB].run(
        db.add_session,
        hashlib.sha256(token.encode()).hexdigest(),
        user.id,
        time.time() + SESSION_LIFETIME,
    )
    response = web.json_response({"id": user.id, "username": user.username}, status=status)
    response.set_cookie(
        COOKIE,
        token,
        max_age=SESSION_LIFETIME,
        httponly=True,
        samesite="Strict",
        secure=request.app[SETTINGS].cookie_secure,
    )
    return response


@routes.post("/api/signup")
async def signup(request: web.Request) -> web.Response:
    username, password = await fields(request, "username", "password")
    if not (username.isalnum() and username.isascii() and 0 < len(username) <= 32):
        raise Refused(400, "bad_request", "a username is 1-32 letters and digits")
    if len(password) < 8:
        raise Refused(400, "bad_request", "a password is at least 8 characters")
    user = await request.app[DB].run(db.create_user, username, await hash_password(password))
    if user is None:
        raise Refused(409, "username_taken", f"{username} is taken")
    return await logged_in(request, user, 201)


@routes.post("/api/login")
async def login(request: web.Request) -> web.Response:
    username, password = await fields(request, "username", "password")
    found = await request.app[DB].run(db.password_of, username)
    if found is None or not await password_matches(password, found[1]):
        raise Refused(401, "wrong_credentials", "unknown user or wrong password")
    return await logged_in(request, found[0])


@routes.post("/api/logout")
async def logout(request: web.Request) -> web.Response:
    """The session ends here, and its gateway session at auth_service: its sockets close (the
    answer says when the gateway could not be told; the token then lives to its expiry)."""
    await current_user(request)
    token_hash = _token_hash(request)
    assert token_hash is not None
    refresh_token = await request.app[DB].run(db.end_session, token_hash)
    ended = refresh_token is not None
    if refresh_token is not None:
        try:
            await request.app[GATEWAY].revoke(refresh_token)
        except GatewayError as exc:
            log.warning("logged out here, but the gateway session lives on: %s", exc)
            ended = False
    response = web.json_response({"logged_out": True, "gateway_session_ended": ended})
    response.del_cookie(COOKIE)
    return response


@routes.delete("/api/account")
async def delete_account(request: web.Request) -> web.Response:
    """The user is gone here first (no new token, every proxy call refused), then every gateway
    session of theirs ends, so their sockets close on every replica. If the gateway cannot be
    reached the account is deleted all the same and the answer says so (502)."""
    user = await current_user(request)
    await request.app[DB].run(db.delete_user, user.id)
    try:
        ended = await request.app[GATEWAY].end_sessions(user.id)
    except GatewayError as exc:
        log.error("deleted %s, but their gateway sessions live on: %s", user.username, exc)
        response = web.json_response(
            {
                "error": "gateway_unavailable",
                "message": "the account is deleted; its open sockets could not be closed now",
            },
            status=502,
        )
    else:
        response = web.json_response({"deleted": user.username, "gateway_sessions_ended": ended})
    response.del_cookie(COOKIE)
    return response


# -- documents and sharing -------------------------------------------------------------------


def document_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise Refused(404, "not_found", "no such document")
    return int(raw)


@routes.get("/api/documents")
async def documents(request: web.Request) -> web.Response:
    user = await current_user(request)
    found = await request.app[DB].run(db.documents_of, user.id)
    return web.json_response(
        {
            "documents": [
                {
                    "id": d.id,
                    "title": d.title,
                    "channel": channel_of(d.id),
                    "owner": d.owner,
                    "shared_with": list(d.shared_with),
                }
                for d in found
            ]
        }
    )


@routes.post("/api/documents")
async def create_document(request: web.Request) -> web.Response:
    user = await current_user(request)
    (title,) = await fields(request, "title")
    if not 0 < len(title) <= 200:
        raise Refused(400, "bad_request", "a title is 1-200 characters")
    new = await request.app[DB].run(db.create_document, user.id, title)
    return web.json_response({"id": new, "title": title, "channel": channel_of(new)}, status=201)


async def owned_and_other(request: web.Request) -> tuple[int, int]:
    """The document (the caller must own it) and the user named in the path."""
    user = await current_user(request)
    document = document_id(request)
    database = request.app[DB]
    if not await database.run(db.owns, user.id, document):
        raise Refused(404, "not_found", "no such document of yours")
    other = await database.run(db.user_id_of, request.match_info["username"])
    if other is None or other == user.id:
        raise Refused(404, "not_found", "no such other user")
    return document, other


@routes.put("/api/documents/{id}/shares/{username}")
async def share(request: web.Request) -> web.Response:
    """Shared: the other user may subscribe from their next token on (the subscribe proxy says
    yes from now), and is told so on their own channel."""
    document, other = await owned_and_other(request)
    await request.app[DB].run(db.share, document, other)
    try:
        await request.app[GATEWAY].notify(
            other, {"type": "shared", "document": document, "channel": channel_of(document)}
        )
    except GatewayError as exc:
        log.warning("shared, but the notice did not reach the gateway: %s", exc)
    return web.Response(status=204)


@routes.delete("/api/documents/{id}/shares/{username}")
async def unshare(request: web.Request) -> web.Response:
    """Unshared here, then the other user's sockets leave the channel on every replica at once
    (``/v1/unsubscribe``); the subscribe proxy refuses them from now on. A gateway that does not
    answer makes this a 502: the sharing is gone, and calling again removes the sockets."""
    document, other = await owned_and_other(request)
    await request.app[DB].run(db.unshare, document, other)
    await request.app[GATEWAY].unsubscribe(other, channel_of(document))
    return web.Response(status=204)


@routes.get("/api/documents/{id}/messages")
async def messages(request: web.Request) -> web.Response:
    user = await current_user(request)
    document = document_id(request)
    database = request.app[DB]
    if not await database.run(db.may_read, user.id, document):
        raise Refused(404, "not_found", "no such document shared with you")
    return web.json_response({"messages": await database.run(db.messages_of, document)})


@routes.get("/api/online")
async def online(request: web.Request) -> web.Response:
    await current_user(request)
    return web.json_response({"online": await request.app[DB].run(db.online_usernames)})


# -- gateway tokens for the app's users ------------------------------------------------------


@routes.post("/api/token")
async def token(request: web.Request) -> web.Response:
    """An access token for the gateway, what the JavaScript client's ``getToken`` fetches for
    the first ``auth`` and for every renewal. The gateway session behind it is kept with this
    session of ours and refreshed while the user's documents stay the same; a changed set (a share
    or an un-share) is a new token exchange, whose grant lists the new set."""
    user = await current_user(request)
    token_hash = _token_hash(request)
    assert token_hash is not None
    database, gateway = request.app[DB], request.app[GATEWAY]
    channels = channels_for([d.id for d in await database.run(db.documents_of, user.id)])
    wanted = json.dumps(channels)
    held = await database.run(db.gateway_session, token_hash)
    tokens = None
    if held is not None and held[1] == wanted:
        try:
            tokens = await gateway.refresh(held[0])
        except GatewayError as exc:
            if exc.code != "invalid_grant":
                raise
    if tokens is None:
        tokens = await gateway.exchange(user.id, user.username, channels)
    await database.run(db.keep_gateway_session, token_hash, tokens["refresh_token"], wanted)
    return web.json_response(
        {
            "access_token": tokens["access_token"],
            "expires_in": tokens["expires_in"],
            "ws_url": request.app[SETTINGS].ws_url,
            "channels": channels,
        },
        headers={"Cache-Control": "no-store"},
    )


# -- what the gateway asks and tells ---------------------------------------------------------


async def signed(request: web.Request, secret: str) -> dict[str, Any]:
    """The body of a call the gateway signed with ``secret``: the signature is checked on the raw
    bytes, in constant time and within its 5-minute window, before anything is parsed."""
    raw = await request.read()
    if not verify(request.headers.get(HEADER), raw, [secret]):
        raise Refused(401, "bad_signature", "not signed by the gateway")
    try:
        body = json.loads(raw)
    except ValueError:
        raise Refused(400, "bad_request", "the body must be JSON") from None
    if not isinstance(body, dict):
        raise Refused(400, "bad_request", "the body must be a JSON object")
    return body


async def proxied_call(request: web.Request) -> tuple[dict[str, Any], int | None, int | None]:
    """A proxy call, the example's user who made it and the document its channel is (None
    where they are not the example's)."""
    call = await signed(request, request.app[SETTINGS].proxy_secret)
    user = call.get("user")
    sub = user.get("id") if isinstance(user, dict) else None
    channel = call.get("channel")
    return (
        call,
        request.app[GATEWAY].user_id(sub) if isinstance(sub, str) else None,
        document_of(channel) if isinstance(channel, str) else None,
    )


def deny(reason: str) -> web.Response:
    return web.json_response({"allow": False, "reason": reason})


@routes.post("/rt/subscribe")
async def subscribe_proxy(request: web.Request) -> web.Response:
    """Only the owner and the users a document is shared with may subscribe to its channel."""
    _, user, document = await proxied_call(request)
    if user is None or document is None:
        return deny("not a document of this app")
    if not await request.app[DB].run(db.may_read, user, document):
        return deny("this document is not shared with you")
    return web.json_response({"allow": True})


@routes.post("/rt/publish")
async def publish_proxy(request: web.Request) -> web.Response:
    """A chat message: checked against the sharing table, kept in the document's chat, and
    delivered as kept (with its id and author, whatever the client sent besides its text)."""
    call, user, document = await proxied_call(request)
    data = call.get("data")
    text = data.get("text") if isinstance(data, dict) else None
    if user is None or document is None:
        return deny("not a document of this app")
    if not isinstance(text, str) or not 0 < len(text) <= MAX_TEXT:
        return deny(f'a message is {{"text": 1-{MAX_TEXT} characters}}')
    kept = await request.app[DB].run(db.publish_message, user, document, text, time.time())
    if kept is None:
        return deny("this document is not shared with you")
    message_id, author = kept
    return web.json_response(
        {"allow": True, "data": {"id": message_id, "author": author, "text": text}}
    )


@routes.post("/rt/webhooks")
async def webhooks(request: web.Request) -> web.Response:
    """A batch of events; each is kept once, and connects and disconnects count who is online.
    Any 2xx acknowledges the batch; an error makes the gateway send it again, same ids."""
    batch = await signed(request, request.app[SETTINGS].webhook_secret)
    events = batch.get("events")
    if not isinstance(events, list) or not all(_is_event(e) for e in events):
        raise Refused(400, "bad_request", 'the body must be {"events": [...]}')
    await request.app[DB].run(db.record_events, events, request.app[GATEWAY].user_id)
    return web.Response(status=204)


def _is_event(event: object) -> bool:
    return (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and isinstance(event.get("type"), str)
        and isinstance(event.get("ts"), int)
        and isinstance(event.get("user"), str | None)
    )


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})
