"""REST handlers: parse, call the domain, shape the response."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST

from auth_service import browser
from auth_service.appkeys import BUS, KEYRING, METRICS, PUBLISHER, SERVICE, SETTINGS, STORE
from auth_service.domain.clients import TOKEN_EXCHANGE
from auth_service.domain.errors import (
    AuthError,
    InvalidClient,
    InvalidClientToken,
    InvalidRequest,
    InvalidTarget,
    RefreshReuse,
    SessionEnded,
    UnprovenKey,
    UnsupportedGrantType,
)
from auth_service.domain.exchange import ISSUED_TOKEN_TYPE, SUBJECT_TOKEN_TYPE
from auth_service.domain.federation import PROVIDER_TOKEN_TYPES
from auth_service.domain.models import Client
from auth_service.domain.service import TokenPair
from auth_service.http import (
    MAX_TOKEN_LENGTH,
    access_token,
    auth_error_response,
    authenticate_client,
    client_address,
    optional_str,
    read_form_or_json,
    read_json,
    required_str,
)
from auth_service.metrics import timed
from realtime_gateway_protocol.access_token import AUTHORIZATION_DETAILS_TYPE
from shared.dpop import Presented
from shared.http.auth import authorization, bearer_matches
from shared.http.dpop import request_proof
from shared.http.readiness import Readiness, readiness_response
from shared.http.responses import json_response

__all__ = ["readiness", "routes"]

routes = web.RouteTableDef()

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def proof(request: web.Request) -> Presented | None:
    """The request's DPoP proof, for its URL under the issuer (the public base URL)."""
    return request_proof(request, request.app[SETTINGS].issuer)


def token_response(pair: TokenPair, **extra: str) -> web.Response:
    body: dict[str, Any] = {
        "access_token": pair.access_token,
        "token_type": pair.token_type,
        "expires_in": pair.expires_in,
        "refresh_token": pair.refresh_token,
        "refresh_expires_in": pair.refresh_expires_in,
        "scope": pair.scope,
        **extra,
    }
    if pair.authorization_details is not None:
        body["authorization_details"] = pair.authorization_details
    return json_response(body, headers=NO_STORE)


@routes.post("/v1/register")
async def register(request: web.Request) -> web.Response:
    body = await read_json(request)
    user = await request.app[SERVICE].register(
        required_str(body, "username"), required_str(body, "password")
    )
    return json_response({"id": user.id, "username": user.username}, status=201, headers=NO_STORE)


@routes.post("/v1/login")
async def login(request: web.Request) -> web.Response:
    body = await read_json(request)
    username, password = required_str(body, "username"), required_str(body, "password")
    cookie = browser.wants_cookie(request, body)
    metrics = request.app[METRICS]
    try:
        with timed(metrics.login_seconds):
            pair = await request.app[SERVICE].login(
                username, password, address=client_address(request), proof=proof(request)
            )
    except AuthError as exc:
        metrics.logins.labels(exc.code).inc()
        raise
    metrics.logins.labels("ok").inc()
    metrics.tokens_issued.labels("password").inc()
    return await browser.cookie_login(request, pair) if cookie else token_response(pair)


Grant = Callable[[web.Request, dict[str, Any], Client | None], Awaitable[web.Response]]
"""A grant's handler: the request, its parsed body, and the confidential client that
authenticated (None for the public client)."""


async def refresh_token_grant(
    request: web.Request, body: dict[str, Any], client: Client | None
) -> web.Response:
    """RFC 6749 section 6; the refresh token in the body, or in the browser's session cookie."""
    metrics = request.app[METRICS]
    cookie = optional_str(body, "refresh_token") is None
    try:
        presented = (
            await browser.cookie_refresh_token(request)
            if cookie
            else required_str(body, "refresh_token")
        )
        pair = await request.app[SERVICE].refresh(
            presented,
            scope=optional_str(body, "scope"),
            client=client,
            proof=proof(request),
            authorization_details=body.get("authorization_details"),
        )
    except AuthError as exc:
        reuse = isinstance(exc, RefreshReuse) and exc.family_revoked
        outcome = "reuse_detected" if reuse else exc.code
        metrics.refreshes.labels(
            "dpop_key_refused" if isinstance(exc, UnprovenKey) else outcome
        ).inc()
        if reuse:
            metrics.reuse_detected.inc()
        if cookie and (reuse or isinstance(exc, SessionEnded)):
            return await browser.forget_cookies(request, auth_error_response(exc))
        raise
    metrics.refreshes.labels("ok").inc()
    metrics.tokens_issued.labels("refresh_token").inc()
    return await browser.cookie_token_response(request, pair) if cookie else token_response(pair)


SUBJECT_TOKEN_TYPES = (SUBJECT_TOKEN_TYPE, *sorted(PROVIDER_TOKEN_TYPES))


async def token_exchange_grant(
    request: web.Request, body: dict[str, Any], client: Client | None
) -> web.Response:
    """RFC 8693: an app backend exchanges its signed assertion about one of its users, or its
    trusted identity provider's token for one, for that user's tokens (docs/rest.md, "App
    backends")."""
    if client is None:
        raise InvalidClient(
            "token exchange needs client authentication: HTTP Basic or client_secret"
        )
    subject_token_type = required_str(body, "subject_token_type")
    if subject_token_type not in SUBJECT_TOKEN_TYPES:
        raise InvalidRequest(f"subject_token_type must be one of {', '.join(SUBJECT_TOKEN_TYPES)}")
    if optional_str(body, "requested_token_type") not in (None, ISSUED_TOKEN_TYPE):
        raise InvalidRequest(f"requested_token_type can only be {ISSUED_TOKEN_TYPE}")
    if "actor_token" in body or "actor_token_type" in body:  # RFC 8693 section 2.1: a pair
        raise InvalidRequest("delegation (actor_token) is not supported")
    audience = request.app[SETTINGS].audience
    if optional_str(body, "audience") not in (None, audience) or "resource" in body:
        raise InvalidTarget(f"this issuer makes tokens for the audience {audience!r} only")
    metrics = request.app[METRICS]
    try:
        pair = await request.app[SERVICE].exchange(
            client,
            required_str(body, "subject_token", max_length=MAX_TOKEN_LENGTH),
            subject_token_type,
            scope=optional_str(body, "scope"),
            authorization_details=body.get("authorization_details"),
            proof=proof(request),
        )
    except AuthError as exc:
        metrics.exchanges.labels(exc.code).inc()
        raise
    metrics.exchanges.labels("ok").inc()
    metrics.tokens_issued.labels("token_exchange").inc()
    return token_response(pair, issued_token_type=ISSUED_TOKEN_TYPE)


GRANTS: dict[str, Grant] = {
    "refresh_token": refresh_token_grant,
    TOKEN_EXCHANGE: token_exchange_grant,
}
"""The one table of grant types: ``/v1/token`` dispatches on it and the RFC 8414 metadata lists
it, so adding a grant is one entry here and its handler."""


@routes.post("/v1/token")
async def token(request: web.Request) -> web.Response:
    body = await read_form_or_json(request)
    client = await authenticate_client(request, body)
    grant_type = required_str(body, "grant_type")
    grant = GRANTS.get(grant_type)
    if grant is None:
        raise UnsupportedGrantType(f"grant_type {grant_type!r} is not supported")
    with timed(request.app[METRICS].grant_seconds, grant_type):
        return await grant(request, body, client)


@routes.post("/v1/logout")
async def logout(request: web.Request) -> web.Response:
    body = await read_json(request) if request.can_read_body else {}
    everywhere = body.get("all", False)
    if not isinstance(everywhere, bool):
        raise InvalidRequest("'all' must be true or false")
    service = request.app[SERVICE]
    refresh_token = optional_str(body, "refresh_token")
    if hdrs.AUTHORIZATION in request.headers:
        token, dpop_scheme = access_token(request)
        await service.logout_with_access_token(
            token, everywhere=everywhere, dpop_scheme=dpop_scheme, proof=proof(request)
        )
    elif refresh_token:
        await service.logout_with_refresh_token(
            refresh_token, everywhere=everywhere, proof=proof(request)
        )
    elif await browser.has_session(request):
        try:
            presented = await browser.cookie_refresh_token(request)
            await service.logout_with_refresh_token(
                presented, everywhere=everywhere, proof=proof(request)
            )
        except SessionEnded as exc:
            return await browser.forget_cookies(request, auth_error_response(exc))
        return await browser.cookie_logout(request, everywhere)
    else:
        raise InvalidRequest("send 'Authorization: Bearer <access token>' or a 'refresh_token'")
    return json_response({"status": "logged_out", "all": everywhere}, headers=NO_STORE)


@routes.post("/v1/revoke")
async def revoke(request: web.Request) -> web.Response:
    body = await read_form_or_json(request)
    client = await authenticate_client(request, body)
    await request.app[SERVICE].revoke(
        required_str(body, "token", max_length=MAX_TOKEN_LENGTH),
        client=client,
        proof=proof(request),
    )
    return json_response({}, headers=NO_STORE)


@routes.post("/v1/sessions/revoke")
async def revoke_sessions(request: web.Request) -> web.Response:
    """A confidential client ends every session of one of its users (their sockets close)."""
    body = await read_form_or_json(request)
    client = await authenticate_client(request, body)
    if client is None:
        raise InvalidClient("ending a user's sessions needs client authentication")
    count = await request.app[SERVICE].revoke_app_user(client, required_str(body, "sub"))
    return json_response({"revoked_sessions": count}, headers=NO_STORE)


@routes.get("/.well-known/jwks.json")
async def jwks(request: web.Request) -> web.Response:
    max_age = request.app[SETTINGS].jwks_max_age
    return json_response(
        request.app[KEYRING].jwks(), headers={"Cache-Control": f"public, max-age={max_age}"}
    )


CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
"""Confidential clients (``clients create``) use either secret method; "none" is the public
client (``AUTH_CLIENT_ID``)."""


@routes.get("/.well-known/oauth-authorization-server")
async def metadata(request: web.Request) -> web.Response:
    issuer = request.app[SETTINGS].issuer
    return json_response(
        {
            "issuer": issuer,
            "jwks_uri": f"{issuer}/.well-known/jwks.json",
            "token_endpoint": f"{issuer}/v1/token",
            "revocation_endpoint": f"{issuer}/v1/revoke",
            "grant_types_supported": sorted(GRANTS),
            # RFC 8414 requires a non-empty list. There is no authorization endpoint, so no
            # "code" or "token": "none" (registered by OAuth 2.0 Multiple Response Type Encoding
            # Practices) is the one value that claims no authorization-endpoint flow.
            "response_types_supported": ["none"],
            "token_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
            "revocation_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
            "authorization_details_types_supported": [AUTHORIZATION_DETAILS_TYPE],
            "scopes_supported": sorted(set(request.app[SETTINGS].default_scope.split())),
            **dpop_metadata(await request.app[SERVICE].dpop_algorithms()),
        },
        headers={"Cache-Control": f"public, max-age={request.app[SETTINGS].jwks_max_age}"},
    )


def dpop_metadata(algorithms: list[str]) -> dict[str, list[str]]:
    """RFC 9449 section 5.1, listed while DPoP is on (``AUTH_DPOP`` not ``off``)."""
    return {"dpop_signing_alg_values_supported": algorithms} if algorithms else {}


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    return readiness_response(await readiness(request.app))


async def readiness(app: web.Application) -> Readiness:
    """Ready when the database answers and a key signs; a bus that refuses events, or events held
    up in the outbox, only degrade."""
    checks: dict[str, str] = {}
    try:
        await app[STORE].ping()
        checks["database"] = "ok"
    except AuthError as exc:
        checks["database"] = exc.description
    current = app[KEYRING].current_key(time.time())
    if current is None:
        checks["signing_key"] = "no signing key loaded"
    elif current.private_key is None:
        checks["signing_key"] = f"no configured secret decrypts the signing key {current.kid}"
    else:
        checks["signing_key"] = "ok"
    degraded: dict[str, str] = {}
    if not app[BUS].connected:
        degraded["event_bus"] = "redis unreachable; revocations wait in the outbox"
    held_up = await app[PUBLISHER].describe_backlog()
    if held_up is not None:
        degraded["outbox"] = held_up
    return Readiness(checks, degraded)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    token = request.app[SETTINGS].metrics_token
    header = authorization(request.headers)
    if token and not bearer_matches(header, (token,)):
        raise InvalidClientToken("/metrics needs AUTH_METRICS_TOKEN", missing=header is None)
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
