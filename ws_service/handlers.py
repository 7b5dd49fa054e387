"""HTTP and WebSocket handlers: parse, call the domain, shape the response."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import NamedTuple

from aiohttp import WebSocketError, WSCloseCode, WSMessage, WSMsgType, hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST

from realtime_gateway_protocol.access_token import Claims
from realtime_gateway_protocol.close_codes import CloseCode, Disconnect
from shared.http import access
from shared.http.auth import authorization, bearer_matches
from shared.http.forwarded import client_address, forwarded_for
from shared.http.jwks import JwksCache
from shared.http.readiness import Readiness, readiness_response
from shared.http.responses import http_exception_json, json_error, json_response
from shared.http.serve import DRAIN
from shared.jsonlog import audit
from ws_service import handshake
from ws_service.appkeys import BUS, GATEWAY, JWKS, METRICS, SETTINGS, SOCKETS, TRUSTED_KEYS
from ws_service.domain.connection import State
from ws_service.domain.errors import AuthError
from ws_service.domain.gateway import Gateway
from ws_service.domain.ratelimit import TokenBucket
from ws_service.frames import ClientWebSocket
from ws_service.peer import WebSocketPeer
from ws_service.settings import Settings

__all__ = ["MAX_UPGRADE_HEADER_BYTES", "healthz", "metrics", "readiness", "readyz", "websocket"]

log = logging.getLogger(__name__)


_FORBIDDEN_ORIGIN = (
    "this Origin may not open a WebSocket: only the origins in WS_ALLOWED_ORIGINS may; a client"
    " outside a browser should send no Origin header"
)
"""Says the fix: websocket-client, for one, sends the gateway's own origin unless told not to."""

_CONTROL = frozenset({WSMsgType.PING, WSMsgType.PONG})
_DATA = frozenset({WSMsgType.TEXT, WSMsgType.BINARY})
_TOO_BIG = WSCloseCode.MESSAGE_TOO_BIG
"""The reader's refusal of a message over ``WS_MAX_MESSAGE_BYTES`` or in too many frames."""


MAX_UPGRADE_HEADER_BYTES = 32 * 1024
"""The header section an upgrade request may carry, names and values: nginx's default
(``large_client_header_buffers 4 8k``). A socket's request lives as long as the socket, and
aiohttp alone takes 128 lines of 8 KiB: one upgrade held 1.5 MB of headers for the socket's life,
beside the 18 KiB of an idle socket, whatever the per-address and per-user caps. A bearer
subprotocol's token (at most about 6 KB) and a browser's cookies fit."""

_CODES = frozenset({*range(1000, 1016), *(int(code) for code in CloseCode)})
"""The close codes counted by their value; any other a client sends is counted as ``other``."""


def _code_label(code: int | None) -> str:
    """No code is RFC 6455's 1006: the connection ended without a close frame."""
    return "1006" if code is None else str(code) if code in _CODES else "other"


class _Admitted(NamedTuple):
    ws: web.WebSocketResponse
    claims: Claims | None
    remote: str


@access.self_contained
async def websocket(request: web.Request) -> web.StreamResponse:
    """The socket's whole life in this one frame: it writes its own access line and answers its
    own refusals as JSON, so no middleware frame waits beside it (see :mod:`shared.http.access`)."""
    line = access.Line(request)
    try:
        gateway, settings, metrics = (
            request.app[GATEWAY],
            request.app[SETTINGS],
            request.app[METRICS],
        )
        opened = gateway.context.clock.monotonic()
        admitted = await _admit(request, gateway, settings)
        if not isinstance(admitted, _Admitted):
            return line.answered(admitted)
        ws, claims, remote = admitted
        # The 101's headers are sent and never read again; cleared, their table (about 700
        # bytes with the request id) is not kept for the socket's life.
        ws.headers.clear()
        sockets = request.app[SOCKETS]
        peer = WebSocketPeer(
            ws,
            request.transport,
            settings.max_outbox_bytes,
            metrics.outbox_overflows.inc,
            settings.close_timeout,
        )
        conn = gateway.connect(peer, remote, opened)
        # Frames before auth, and control frames at any time, have a small budget of their own.
        frames = TokenBucket(
            settings.preauth_frame_rate, settings.preauth_frame_burst, time.monotonic()
        )
        sockets.add(peer)
        task = asyncio.current_task()
        msg: WSMessage | None = None
        frames_in = 0
        try:
            if claims is not None:
                await conn.authenticated_at_handshake(claims)
            while not peer.close_requested:
                peer.reader = task
                try:
                    msg = await ws.receive()
                except asyncio.CancelledError:
                    if task is None or not peer.close_requested:
                        raise
                    task.uncancel()
                    break
                finally:
                    peer.reader = None
                if msg.type is WSMsgType.CLOSE:  # aiohttp has answered it (autoclose)
                    break
                if msg.type in _DATA:
                    frames_in += 1
                unauthenticated = conn.state is State.AWAITING_AUTH
                if (unauthenticated or msg.type in _CONTROL) and not frames.take(time.monotonic()):
                    if not conn.closing:
                        metrics.limit_hits.labels("preauth_frame_rate").inc()
                    conn.close(Disconnect.RATE_LIMITED)
                elif msg.type is WSMsgType.TEXT:
                    await conn.on_text(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    conn.on_binary()
                elif msg.type is WSMsgType.PING:
                    peer.pong(msg.data)
                elif msg.type is not WSMsgType.PONG:
                    if isinstance(msg.data, WebSocketError) and msg.data.code == _TOO_BIG:
                        metrics.limit_hits.labels("message_size").inc()  # in bytes or frames
                    break
        except Exception:
            log.exception("WebSocket handler failed", extra={"remote": remote})
            fault = Disconnect.INTERNAL_ERROR
            peer.close(fault.code, fault.reason)  # after what is queued; finish() sends it
        finally:
            conn.disconnected()
            try:
                await peer.finish(settings.close_timeout)
            finally:  # even cancelled in it: a socket left in the set is never let go
                sockets.discard(peer)
                line.end = end = peer.session_end(msg, frames_in)
                metrics.disconnects.labels(end.closed_by, _code_label(end.close_code)).inc()
        return line.answered(ws)
    except web.HTTPException as exc:
        return line.answered(http_exception_json(exc))
    finally:
        line.write()


async def _admit(
    request: web.Request, gateway: Gateway, settings: Settings
) -> _Admitted | web.Response:
    """The upgrade, or the JSON refusal of it: origin, drain, subprotocol offer, a credential
    at the upgrade, the per-address wait limit."""
    # The client's address behind a trusted proxy, for the per-address cap and every audit line
    # of the handshake (the proxy's own address is every client's).
    remote = client_address(
        _peer_host(request), forwarded_for(request.headers), settings.forwarded_allow_ips
    )
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None and origin not in settings.allowed_origins:
        audit("ws_origin_refused", origin=origin, remote=remote)
        return json_error(403, "forbidden_origin", _FORBIDDEN_ORIGIN)
    if sum(len(name) + len(value) for name, value in request.raw_headers) > (
        MAX_UPGRADE_HEADER_BYTES
    ):
        request.app[METRICS].limit_hits.labels("upgrade_header_bytes").inc()
        return json_error(
            431,
            "request_header_fields_too_large",
            f"an upgrade request's headers may take at most {MAX_UPGRADE_HEADER_BYTES} bytes",
        )
    if _draining(request.app):
        return json_error(
            503,
            "draining",
            "this replica is shutting down: connect to another one",
            {"Retry-After": "1"},
        )
    problem = handshake.unanswerable_offer(request)
    if problem is not None:
        return json_error(400, "unsupported_subprotocol", problem)
    ws = ClientWebSocket(
        protocols=handshake.PROTOCOLS,
        heartbeat=settings.heartbeat,
        # aiohttp refuses a message of max_msg_size bytes and more; the limit is the largest allowed
        max_msg_size=settings.max_message_bytes + 1,
        compress=False,
        timeout=settings.close_timeout,
        autoping=False,
    )
    # A credential at the upgrade (a ticket is spent when checked) is read only from a request
    # that can be upgraded; without one, prepare() is the only check (aiohttp's takes a tenth of
    # the gateway's own work per handshake).
    claims = None
    if handshake.carries_credential(request):
        if not ws.can_prepare(request).ok:
            return _not_an_upgrade()
        try:
            claims = await handshake.authenticate(request)
        except AuthError as err:
            return handshake.refusal(request, err, remote)
    if claims is None and not gateway.may_wait(remote):
        request.app[METRICS].limit_hits.labels("unauthenticated_per_address").inc()
        audit("ws_unauthenticated_limit", remote=remote)
        return json_error(
            429,
            "too_many_connections",
            "too many sockets from this address are still to authenticate",
            {"Retry-After": str(max(1, round(settings.auth_timeout)))},
        )
    try:
        await ws.prepare(request)
    except web.HTTPException:
        return _not_an_upgrade()
    return _Admitted(ws, claims, remote)


def _not_an_upgrade() -> web.Response:
    return json_error(400, "bad_request", "this endpoint only accepts WebSocket upgrades")


def _draining(app: web.Application) -> bool:
    drain = app.get(DRAIN)
    return drain is not None and drain.draining


def _peer_host(request: web.Request) -> str | None:
    """The TCP peer's address, as ``request.remote`` gives it but without its per-request cache:
    a WebSocket's request lives as long as its socket, and that cache is a 200-byte dict."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if isinstance(peer, list | tuple) else None


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    return readiness_response(readiness(request.app))


def readiness(app: web.Application) -> Readiness:
    """Ready once auth_service's key set is loaded, until the replica drains. What is degraded is
    reported, but does not make a replica unready: cached keys still verify, local traffic flows
    without Redis, and a trusted issuer's outage concerns its own users only."""
    jwks = app[JWKS]
    degraded: dict[str, str] = {}
    if not app[BUS].connected:
        degraded["event_bus"] = "redis unreachable"
    outage = _outage(jwks)
    if outage:
        degraded["issuer"] = outage
    keys = "ok" if jwks.ready else f"not loaded yet from {app[SETTINGS].jwks_url}"
    if not jwks.ready and outage:
        keys += f" ({outage})"
    for issuer, cache in app[TRUSTED_KEYS].items():
        if not cache.ready or cache.outage is not None:
            degraded[f"trusted_issuer {issuer}"] = _outage(cache) or "keys not loaded yet"
    checks = {"signing_keys": keys}
    if _draining(app):
        checks["draining"] = "shutting down: the sockets are closed over WS_DRAIN_SECONDS"
    return Readiness(checks, degraded)


def _outage(jwks: JwksCache) -> str:
    if jwks.outage is None:
        return ""
    since, reason = jwks.outage
    when = datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds")
    return f"unreachable since {when}: {reason}"


async def metrics(request: web.Request) -> web.Response:
    token = request.app[SETTINGS].metrics_token
    if token and not bearer_matches(authorization(request.headers), (token,)):
        return json_error(
            401, "invalid_token", "/metrics needs WS_METRICS_TOKEN", {"WWW-Authenticate": "Bearer"}
        )
    return web.Response(
        body=request.app[METRICS].render(), headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST}
    )
