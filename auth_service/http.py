"""Request parsing and error responses shared by the auth handlers."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote_plus

from aiohttp import hdrs, web

from auth_service.appkeys import METRICS, SERVICE, SETTINGS
from auth_service.domain.errors import (
    AccessDenied,
    AuthError,
    CsrfRejected,
    InvalidAuthorizationDetails,
    InvalidClient,
    InvalidClientToken,
    InvalidCredentials,
    InvalidDpopProof,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    IssuerUnavailable,
    RegistrationClosed,
    StoreUnavailable,
    Throttled,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedMediaType,
    UsernameTaken,
)
from auth_service.domain.models import Client
from realtime_gateway_protocol.wire_json import WireJSONError, loads
from shared.http.auth import access_token as shared_access_token
from shared.http.auth import authorization as authorization_header
from shared.http.coding import content_coding_refusal, media_type_refusal
from shared.http.dpop import challenge
from shared.http.forwarded import client_address as forwarded_client_address
from shared.http.forwarded import forwarded_for
from shared.http.responses import http_exception_json, json_error
from shared.http.urlencoded import UrlencodedError, strict_pairs

__all__ = [
    "HTTP_STATUSES",
    "MAX_FIELD_LENGTH",
    "MAX_TOKEN_LENGTH",
    "access_token",
    "authenticate_client",
    "client_address",
    "error_middleware",
    "metrics_middleware",
    "oauth_description",
    "optional_str",
    "read_form_or_json",
    "read_json",
    "required_str",
]

log = logging.getLogger(__name__)

MAX_FIELD_LENGTH = 4096
MAX_TOKEN_LENGTH = 16384
"""A token presented in the body (``token`` at ``/v1/revoke``, a token exchange's
``subject_token``) may be longer than another field: this issuer's own access token with the
largest ``authorization_details`` it grants is about 6,500 characters, and an identity provider's
ID or access token carrying groups or roles is often past 4,096."""
MAX_FORM_FIELDS = 16
FORM = "application/x-www-form-urlencoded"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


HTTP_STATUSES: dict[type[AuthError], int] = {
    AuthError: 500,
    InvalidRequest: 400,
    UnsupportedMediaType: 415,
    InvalidScope: 400,
    InvalidAuthorizationDetails: 400,
    InvalidTarget: 400,
    UnauthorizedClient: 400,
    UnsupportedGrantType: 400,
    InvalidGrant: 400,
    InvalidDpopProof: 400,
    InvalidCredentials: 401,
    InvalidClientToken: 401,
    InvalidClient: 401,
    AccessDenied: 403,
    UsernameTaken: 409,
    RegistrationClosed: 403,
    CsrfRejected: 403,
    Throttled: 429,
    StoreUnavailable: 503,
    IssuerUnavailable: 503,
}
"""The one map from the domain's errors to HTTP statuses; the nearest class in the MRO wins."""


def auth_error_response(exc: AuthError) -> web.Response:
    status = next(HTTP_STATUSES[cls] for cls in type(exc).__mro__ if cls in HTTP_STATUSES)
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, InvalidClientToken):
        if exc.dpop:
            headers["WWW-Authenticate"] = challenge(exc.code)
        elif exc.missing:  # RFC 6750 section 3.1: no error code for a request without any
            headers["WWW-Authenticate"] = 'Bearer realm="auth_service"'
        else:
            headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'

    if isinstance(exc, InvalidClient):
        headers["WWW-Authenticate"] = 'Basic realm="auth_service"'
    if status >= 500:
        # The description of a server-side failure is for the operator: a driver's message (a
        # host, a path), which configured secret failed. The client learns what it can act on.
        log.error("request failed", extra={"code": exc.code, "reason": exc.description})
        if status == 503:
            return json_error(status, exc.code, _TRY_AGAIN, headers)
        return json_error(status, "server_error", "internal error", headers)
    return json_error(status, exc.code, oauth_description(exc.description), headers)


def oauth_description(text: str) -> str:
    """``text`` within RFC 6749 section 5.2's ``error_description`` alphabet, printable ASCII but
    ``"`` and ``\\`` (a MUST at the token and revocation endpoints, kept on every one): a
    description quoting the request (``grant_type 'café' is not supported``) held any character
    it was sent. ``"`` reads as ``'``, anything else outside the alphabet as ``?``."""
    return "".join(map(_description_char, text))


def _description_char(c: str) -> str:
    if " " <= c <= "~" and c not in ('"', "\\"):
        return c
    return "'" if c == '"' else "?"


_TRY_AGAIN = "the service cannot answer this right now; try again after Retry-After seconds"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place that maps errors to JSON bodies: no HTML page or bare 500 ever leaves."""
    try:
        return await handler(request)
    except AuthError as exc:
        return auth_error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 403 and request.method == hdrs.METH_OPTIONS:
            # aiohttp-cors refusing a preflight; its text says what (origin, method, a header).
            refusal = exc.text or "CORS preflight request failed"
            return json_error(403, "cors_refused", oauth_description(refusal))
        return http_exception_json(exc, "http_error")
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return json_error(500, "server_error", "internal error")


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    response = await handler(request)
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    request.app[METRICS].request_seconds.labels(name, request.method, str(response.status)).observe(
        time.perf_counter() - start
    )
    return response


async def _read_body(request: web.Request, media_types: tuple[str, ...]) -> bytes:
    """The raw body of one of ``media_types``, in UTF-8 (the only charset either format allows).
    Waiting for it is timed, unless it has all arrived (a small body comes with its headers)."""
    refusal = content_coding_refusal(request)
    if refusal is not None:
        raise UnsupportedMediaType(refusal)
    if request.content.is_eof():
        raw = await request.read()
    else:
        try:
            async with asyncio.timeout(request.app[SETTINGS].http_timeout):
                raw = await request.read()
        except TimeoutError:
            raise web.HTTPRequestTimeout() from None
    if not raw:
        raise InvalidRequest("the request body is missing")
    refusal = media_type_refusal(request, media_types)
    if refusal is not None:
        raise UnsupportedMediaType(refusal)
    return raw


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


def _json(raw: bytes) -> dict[str, Any]:
    try:
        return _object(loads(raw, unique_keys=True))
    except WireJSONError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None


_EMPTY_MEANS_NONE = frozenset({"scope"})


def _form(raw: bytes) -> dict[str, Any]:
    """Strict ``application/x-www-form-urlencoded``: UTF-8 before and after percent-decoding,
    each parameter at most once (RFC 6749 section 3.1), and one sent without a value as if it
    were not sent (section 3.2: ``client_id=`` is the public client), but ``scope``: an empty
    scope asks for none (docs/rest.md), where an omitted one would take the session's or the
    client's default, so a client asking for no rights is never handed some."""
    try:
        pairs = strict_pairs(raw.decode("utf-8"), max_fields=MAX_FORM_FIELDS, what="form body")
    except UnicodeDecodeError:
        raise InvalidRequest("the form body is not valid UTF-8") from None
    except UrlencodedError as exc:
        raise InvalidRequest(str(exc)) from None
    body: dict[str, Any] = {}
    for name, value in pairs:
        if name in body:
            raise InvalidRequest(f"'{name}' is repeated")
        body[name] = value
    return {name: value for name, value in body.items() if value or name in _EMPTY_MEANS_NONE}


async def read_json(request: web.Request) -> dict[str, Any]:
    return _json(await _read_body(request, ("application/json",)))


async def read_form_or_json(request: web.Request) -> dict[str, Any]:
    """OAuth endpoints take form bodies (RFC 6749) and, for convenience, JSON."""
    raw = await _read_body(request, (FORM, "application/json"))
    return _form(raw) if request.content_type == FORM else _json(raw)


CLIENT_ASSERTION_FIELDS = ("client_assertion", "client_assertion_type")


async def authenticate_client(request: web.Request, body: dict[str, Any]) -> Client | None:
    """RFC 6749 section 2.3: the confidential client that authenticated (HTTP Basic or
    ``client_secret`` in the body), or None for the public client (``AUTH_CLIENT_ID`` or no
    ``client_id``, no secret). Anything else is ``invalid_client``, never silently ignored."""
    credentials = _client_credentials(request, body)
    if credentials is None:
        return None
    client_id, secret = credentials
    return await request.app[SERVICE].clients.authenticate(
        client_id, secret, address=client_address(request)
    )


def _client_credentials(request: web.Request, body: dict[str, Any]) -> tuple[str, str] | None:
    """The presented ``(client_id, client_secret)``, by exactly one method; None for none."""
    if any(field in body for field in CLIENT_ASSERTION_FIELDS):
        raise InvalidClient(
            "client assertions are not supported: use HTTP Basic or client_secret in the body"
        )
    client_id = optional_str(body, "client_id")
    posted = optional_str(body, "client_secret")
    authorization = authorization_header(request.headers)
    if authorization is not None:
        if posted is not None:
            raise InvalidRequest(
                "use one client authentication method: HTTP Basic or client_secret"
            )
        basic_id, secret = _basic_credentials(authorization)
        if client_id is not None and client_id != basic_id:
            raise InvalidRequest("client_id differs from the client of the HTTP Basic credentials")
        return basic_id, secret
    if posted is not None:
        if client_id is None:
            raise InvalidClient("client_secret needs the client_id it belongs to")
        return client_id, posted
    if client_id is not None and client_id != request.app[SETTINGS].client_id:
        raise InvalidClient("an unknown client, or a confidential one without its client_secret")
    return None


def _basic_credentials(authorization: str) -> tuple[str, str]:
    """RFC 6749 section 2.3.1: base64 of ``id:secret``, each form-urlencoded first."""
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient("clients authenticate with HTTP Basic (or client_secret in the body)")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        client_id, colon, secret = decoded.partition(":")
        if not colon:
            raise ValueError("no ':'")
        client_id = unquote_plus(client_id, errors="strict")
        secret = unquote_plus(secret, errors="strict")
    except (binascii.Error, ValueError):
        raise InvalidClient("malformed HTTP Basic credentials") from None
    if "\x00" in client_id or "\x00" in secret:
        raise InvalidRequest("HTTP Basic credentials must not contain U+0000")
    return client_id, secret


def access_token(request: web.Request) -> tuple[str, bool]:
    """The access token of ``Authorization: Bearer``, or of ``Authorization: DPoP`` (then True:
    a DPoP-bound token, RFC 9449 section 7.1); anything else there is ``invalid_token``."""
    presented = shared_access_token(authorization_header(request.headers))
    if presented is None:
        raise InvalidClientToken(
            "use 'Authorization: Bearer <access token>', or 'DPoP <access token>' with a proof"
        )
    return presented


def optional_str(
    body: dict[str, Any], name: str, *, max_length: int = MAX_FIELD_LENGTH
) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be a string")
    if len(value) > max_length:
        raise InvalidRequest(f"'{name}' is too long")
    if "\x00" in value:  # no name, secret or token holds one, and PostgreSQL's text cannot
        raise InvalidRequest(f"'{name}' must not contain U+0000")
    return value


def required_str(body: dict[str, Any], name: str, *, max_length: int = MAX_FIELD_LENGTH) -> str:
    value = optional_str(body, name, max_length=max_length)
    if not value:
        raise InvalidRequest(f"'{name}' is required")
    return value


def client_address(request: web.Request) -> str:
    """The peer address, or the last X-Forwarded-For hop when the peer is a trusted proxy."""
    return forwarded_client_address(
        request.remote,
        forwarded_for(request.headers),
        request.app[SETTINGS].forwarded_allow_ips,
    )
