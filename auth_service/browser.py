"""Browser session mode: the refresh token lives only in an encrypted, HttpOnly, SameSite=Strict
cookie (aiohttp-session), never where page scripts can read it.

Cookies ride along on requests other sites make, so every cookie-authenticated request must also
prove it comes from our page: an ``Origin`` that is the issuer's own or in ``AUTH_CORS_ORIGINS``, and
an ``X-CSRF-Token`` header equal to the token bound inside the encrypted session (the page takes it
from the login or refresh response; after a reload, from the non-HttpOnly CSRF cookie). Over https
both cookies carry the ``__Host-`` prefix (:func:`browser_cookies`). CORS with credentials is
granted to the configured origins only, and only on the API a page calls (``/v1/...``).
``POST /v1/ws-ticket`` mints single-use WebSocket tickets (``protocol/realtime_gateway_protocol/tickets.py``).
``POST /v1/csrf`` gives a page of an allowed origin on another host the CSRF token it cannot read
from the cookie.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp_cors
from aiohttp import hdrs, web
from aiohttp_session import get_session, new_session
from aiohttp_session import setup as setup_session
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from auth_service.appkeys import SERVICE, SETTINGS
from auth_service.domain.errors import (
    CsrfRejected,
    InvalidClientToken,
    InvalidRequest,
    SessionEnded,
)
from auth_service.domain.service import TokenPair
from auth_service.settings import Settings
from shared.http.auth import access_token, authorization
from shared.http.dpop import DPOP_HEADER, NONCE_HEADER, request_proof
from shared.http.responses import json_response
from shared.urls import web_origin

__all__ = [
    "API_PREFIX",
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "HOST_PREFIX",
    "SESSION_COOKIE",
    "BrowserCookies",
    "CsrfRejected",
    "browser_cookies",
    "cookie_login",
    "cookie_logout",
    "cookie_refresh_token",
    "cookie_token_response",
    "has_session",
    "setup",
    "wants_cookie",
]

SESSION_COOKIE = "gw_session"
CSRF_COOKIE = "csrf_token"
HOST_PREFIX = "__Host-"
CSRF_HEADER = "X-CSRF-Token"
API_PREFIX = "/v1/"
_REFRESH, _CSRF = "refresh_token", "csrf"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass(frozen=True)
class BrowserCookies:
    """The session and CSRF cookies as this issuer names and scopes them."""

    session: str
    csrf: str
    session_path: str
    secure: bool


def browser_cookies(settings: Settings) -> BrowserCookies:
    """Over https both names carry the ``__Host-`` prefix: a browser keeps such a cookie only when
    it is ``Secure``, host-only (no ``Domain``) and ``Path=/``, so a page on a sibling subdomain
    cannot plant ("toss") a session or CSRF cookie of its own beside ours. The price: the session
    cookie rides along on every request to this host, not only ``/v1/`` (encrypted and HttpOnly,
    so only bytes). Plain http (development) cannot carry the prefix, which requires ``Secure``:
    there the names are bare, and the session cookie keeps the issuer's ``/v1/`` path."""
    if settings.issuer.startswith("https://"):
        return BrowserCookies(HOST_PREFIX + SESSION_COOKIE, HOST_PREFIX + CSRF_COOKIE, "/", True)
    return BrowserCookies(SESSION_COOKIE, CSRF_COOKIE, cookie_path(settings), False)


class _SessionCookieStorage(EncryptedCookieStorage):
    """aiohttp-session deletes its cookie without the ``Secure`` attribute, and a browser ignores
    such a ``Set-Cookie`` for a ``__Host-`` name: delete it with the attributes it was set with.
    It also encodes the cookie as UTF-8 before decrypting it, and a header's undecodable bytes
    arrive as surrogate escapes (a 500 for any caller): a cookie that is not ASCII, as every
    token it wrote is, counts as no session."""

    def load_cookie(self, request: web.Request) -> str | None:
        values = session_cookie_values(request, self.cookie_name)
        if len(values) != 1:
            return None
        (cookie,) = values
        return cookie if cookie.isascii() else None

    def save_cookie(
        self, response: web.StreamResponse, cookie_data: str, *, max_age: int | None = None
    ) -> None:
        if cookie_data:
            super().save_cookie(response, cookie_data, max_age=max_age)
            return
        params = self.cookie_params
        response.del_cookie(
            self.cookie_name,
            domain=params["domain"],
            path=params["path"],
            secure=params["secure"],
            httponly=params["httponly"],
            samesite=params["samesite"],
        )


R = TypeVar("R", bound=web.StreamResponse)


def setup(app: web.Application, settings: Settings) -> None:
    """Install the session cookie, the ticket endpoint and CORS; call after every route is added.

    CORS covers the API a page calls (``/v1/...``) and nothing else: ``/metrics`` and health are
    for operators, and the JWKS and metadata are public documents with ``Cache-Control: public``,
    which a shared cache would otherwise keep with one origin's CORS headers (no ``Vary: Origin``)."""
    names = browser_cookies(settings)
    setup_session(
        app,
        _SessionCookieStorage(
            cookie_key(settings.key_encryption_secrets[0]),
            cookie_name=names.session,
            path=names.session_path,
            max_age=settings.refresh_token_ttl,
            secure=names.secure,
            httponly=True,
            samesite="Strict",
        ),
    )
    app.router.add_post("/v1/ws-ticket", ws_ticket)
    app.router.add_post("/v1/csrf", csrf_token)
    if not settings.cors_origins:
        return
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=True,
        allow_headers=(hdrs.CONTENT_TYPE, hdrs.AUTHORIZATION, CSRF_HEADER, DPOP_HEADER),
        expose_headers=(NONCE_HEADER, hdrs.WWW_AUTHENTICATE),
        allow_methods=("GET", "POST"),
        max_age=600,
    )
    cors = aiohttp_cors.setup(app, defaults=dict.fromkeys(settings.cors_origins, options))
    for route in list(app.router.routes()):
        if route.resource is not None and route.resource.canonical.startswith(API_PREFIX):
            cors.add(route)
    app.on_response_prepare.append(_vary_by_origin)


async def _vary_by_origin(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """An API answer depends on the request's Origin (its CORS headers are there for one origin
    and not another): ``Vary: Origin``, or a shared cache could hand one origin's answer to
    another (aiohttp-cors does not add it)."""
    if request.path.startswith(API_PREFIX) and "Origin" not in response.headers.get(hdrs.VARY, ""):
        response.headers.add(hdrs.VARY, "Origin")


def cookie_key(secret: str) -> bytes:
    """Derived from the first key-encryption secret, so every replica reads every cookie."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"auth_service cookie")
    return hkdf.derive(secret.encode())


def cookie_path(settings: Settings) -> str:
    """The narrowest path covering /v1/token, /v1/logout and /v1/ws-ticket under the issuer (which
    may sit under a prefix behind a proxy, ``http://host/auth``): never sent to pages."""
    return urlsplit(settings.issuer).path.rstrip("/") + API_PREFIX


def _own_origin(settings: Settings) -> str:
    """The issuer's origin as its page's browser sends it in ``Origin``: an international host in
    ASCII, no default port (the issuer as written refused its own page's cookie login)."""
    parts = urlsplit(settings.issuer)
    return web_origin(parts, parts.scheme) or f"{parts.scheme}://{parts.netloc}"


def check_origin(request: web.Request) -> None:
    settings = request.app[SETTINGS]
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None or (origin != _own_origin(settings) and origin not in settings.cors_origins):
        raise CsrfRejected("this Origin may not use the session cookie")


def wants_cookie(request: web.Request, body: dict[str, Any]) -> bool:
    """Whether a login asks for cookie mode; such a login must come from an allowed Origin."""
    mode = body.get("session")
    if mode is None:
        return False
    if mode != "cookie":
        raise InvalidRequest("'session' must be 'cookie' when present")
    check_origin(request)
    return True


async def cookie_login(request: web.Request, pair: TokenPair) -> web.Response:
    """A fresh session on every login (no fixation), with a fresh CSRF token."""
    session = await new_session(request)
    session[_REFRESH] = pair.refresh_token
    session[_CSRF] = secrets.token_urlsafe(32)
    return _token_response(request, pair, session[_CSRF])


async def cookie_refresh_token(request: web.Request) -> str:
    """The refresh token from the session cookie, once the request proved it is from our page.

    Without a session cookie this is the plain OAuth error for a missing ``refresh_token``; a
    cookie that cannot be read (sealed under a key-encryption secret since retired, or garbled)
    is a session that has ended, so the refusal deletes it: refused as missing, it stayed and
    every page load sent it again (an outside probe)."""
    session = await get_session(request)
    if _REFRESH not in session:
        if not _sent_cookie(request):
            raise InvalidRequest("'refresh_token' is required")
        check_origin(request)
        raise SessionEnded("the session cookie cannot be read; log in again")
    check_origin(request)
    # Undecodable header bytes arrive as surrogate escapes: compare them as the bytes they were.
    presented = request.headers.get(CSRF_HEADER, "").encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(presented, str(session.get(_CSRF, "")).encode()):
        raise CsrfRejected(f"the {CSRF_HEADER} header does not match the session")
    return str(session[_REFRESH])


async def cookie_token_response(request: web.Request, pair: TokenPair) -> web.Response:
    """Rotate the cookie to the new refresh token; the CSRF token stays bound to the session."""
    session = await get_session(request)
    session[_REFRESH] = pair.refresh_token
    return _token_response(request, pair, str(session[_CSRF]))


async def has_session(request: web.Request) -> bool:
    """Whether the request carries a session cookie, readable or not (:func:`cookie_refresh_token`
    says which): a readable one is a sent one."""
    return _sent_cookie(request)


def _sent_cookie(request: web.Request) -> bool:
    """Exactly one session cookie, with a value: several are no session (see
    :func:`session_cookie_values`), never one to delete."""
    values = session_cookie_values(request, browser_cookies(request.app[SETTINGS]).session)
    return len(values) == 1 and bool(values[0])


def session_cookie_values(request: web.Request, name: str) -> list[str]:
    """Every value the ``Cookie`` header gives the cookie ``name``, read as a browser sends the
    header (RFC 6265 section 5.4): pairs separated by ``;``, a name up to the pair's first ``=``.
    aiohttp's parser also splits a pair on whitespace, so a cookie another host of the site set
    on the parent domain under another name, ``x=1 gw_session=junk`` (the ``__Host-`` prefix
    judges the name, not the value), read as the session cookie: a valid session was deleted as
    unreadable, and ``POST /v1/csrf`` handed a cross-host page the planted session's CSRF token
    (an outside probe). Several values are a planted cookie too: the caller reads none."""
    values = []
    for header in request.headers.getall(hdrs.COOKIE, ()):
        for pair in header.split(";"):
            key, sep, value = pair.partition("=")
            if sep and key.strip() == name:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]  # aiohttp quotes a value holding "=" (Fernet's padding)
                values.append(value)
    return values


async def cookie_logout(request: web.Request, everywhere: bool) -> web.Response:
    """The session is already revoked: forget both cookies."""
    response = json_response({"status": "logged_out", "all": everywhere}, headers=NO_STORE)
    return await forget_cookies(request, response)


async def forget_cookies(request: web.Request, response: R) -> R:
    """Delete both cookies with ``response``: after a logout, or with the refusal of a session
    that has ended (revoked, expired, unknown), which every later page load would otherwise send
    again, to be refused again."""
    (await get_session(request)).invalidate()
    names = browser_cookies(request.app[SETTINGS])
    response.del_cookie(names.csrf, path="/", secure=names.secure, samesite="Strict")
    return response


def _token_response(request: web.Request, pair: TokenPair, csrf: str) -> web.Response:
    settings = request.app[SETTINGS]
    names = browser_cookies(settings)
    response = json_response(
        {
            "access_token": pair.access_token,
            "token_type": pair.token_type,
            "expires_in": pair.expires_in,
            "refresh_expires_in": pair.refresh_expires_in,
            "scope": pair.scope,
            "csrf_token": csrf,
        },
        headers=NO_STORE,
    )
    response.set_cookie(
        names.csrf,
        csrf,
        path="/",
        max_age=settings.refresh_token_ttl,
        secure=names.secure,
        httponly=False,
        samesite="Strict",
    )
    return response


async def ws_ticket(request: web.Request) -> web.Response:
    """A ticket for one WebSocket handshake, for ``Authorization: Bearer <access token>`` (or
    ``DPoP <access token>`` with a proof) or for the session cookie (with the CSRF token and an
    allowed Origin, like every cookie request; with a proof when the session is DPoP-bound)."""
    service = request.app[SERVICE]
    header = authorization(request.headers)
    presented = access_token(header)
    proof = request_proof(request, request.app[SETTINGS].issuer)
    if presented is not None:
        token, dpop_scheme = presented
        ticket = await service.ticket_for_access_token(token, dpop_scheme=dpop_scheme, proof=proof)
    elif header is None and await has_session(request):
        refresh_token = await cookie_refresh_token(request)
        ticket = await service.ticket_for_refresh_token(refresh_token, proof=proof)
    else:
        raise InvalidClientToken(
            "use 'Authorization: Bearer <access token>' (or DPoP with a proof) or the session cookie",
            missing=header is None,
        )
    return json_response(
        {"ticket": ticket.ticket, "expires_in": ticket.expires_in}, headers=NO_STORE
    )


async def csrf_token(request: web.Request) -> web.Response:
    """The session's CSRF token, for a page that cannot read the CSRF cookie: one on another host
    than the issuer's (``app.example.com`` against ``auth.example.com``; the cookie is host-only),
    which had no token after a reload and could not resume its session, nor follow another tab's
    login (an outside probe). No weaker than the cookie: only an allowed Origin gets an answer,
    and CORS lets only those origins read it; a page of another site sends no cookie at all
    (``SameSite=Strict``). Nothing rotates. The body, if any, is not read."""
    check_origin(request)
    session = await get_session(request)
    if _REFRESH not in session or _CSRF not in session:
        raise InvalidRequest("there is no browser session")
    return json_response({"csrf_token": str(session[_CSRF])}, headers=NO_STORE)
