"""HTTP and WebSocket handlers: parse, call the domain, shape the response."""

from __future__ import annotations

import hmac
import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST

from shared.close_codes import Disconnect
from shared.http_auth import bearer_token
from shared.http_errors import json_error
from shared.http_json import json_response
from shared.jsonlog import audit
from shared.wire_json import WireJSONError, loads
from ws_service import handshake
from ws_service.appkeys import BUS, GATEWAY, JWKS, METRICS, SETTINGS, SOCKETS
from ws_service.domain.channels import validate_channel
from ws_service.domain.errors import AuthError, InvalidChannel
from ws_service.peer import WebSocketPeer

__all__ = ["healthz", "metrics", "publish", "readyz", "websocket"]

log = logging.getLogger(__name__)


async def websocket(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None and origin not in settings.allowed_origins:
        audit("ws_origin_refused", origin=origin, remote=request.remote)
        return json_error(403, "forbidden_origin", "this Origin may not open a WebSocket")
    ws = web.WebSocketResponse(
        protocols=handshake.PROTOCOLS,
        heartbeat=settings.heartbeat,
        max_msg_size=settings.max_message_bytes,
        compress=False,
        timeout=settings.close_timeout,
    )
    if not ws.can_prepare(request).ok:
        return json_error(400, "bad_request", "this endpoint only accepts WebSocket upgrades")
    try:
        claims = await handshake.authenticate(request)
    except AuthError as err:
        return handshake.refusal(request, err)
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    metrics = request.app[METRICS]
    peer = WebSocketPeer(
        ws, settings.max_outbox_bytes, metrics.limit_hits.labels("outbox_bytes").inc
    )
    conn = request.app[GATEWAY].connect(peer, request.remote)
    if claims is not None:
        conn.authenticated_at_handshake(claims)
    sockets.add(peer)
    try:
        while (msg := await peer.receive()) is not None:
            if msg.type is WSMsgType.TEXT:
                await conn.on_text(msg.data)
            elif msg.type is WSMsgType.BINARY:
                conn.on_binary()
            else:
                break
    except Exception:
        log.exception("WebSocket handler failed", extra={"remote": request.remote})
        fault = Disconnect.INTERNAL_ERROR
        await ws.close(code=fault.code, message=fault.reason.encode())
    finally:
        conn.disconnected()
        await peer.finish(settings.close_timeout)
        sockets.discard(peer)
    return ws


def _bearer_ok(request: web.Request) -> bool:
    """Whether the request carries one of the API keys, compared in constant time."""
    key = bearer_token(request.headers.get(hdrs.AUTHORIZATION))
    if key is None:
        return False
    presented = key.encode()
    matched = False
    for allowed in request.app[SETTINGS].api_keys:
        matched |= hmac.compare_digest(presented, allowed.encode())
    return matched


async def publish(request: web.Request) -> web.Response:
    """Server-side push to any channel, ``user:<id>`` included; messages carry ``from: null``."""
    if not _bearer_ok(request):
        audit("ws_publish_unauthorized", remote=request.remote)
        return json_error(
            401, "invalid_token", "a valid API key is required", {"WWW-Authenticate": "Bearer"}
        )
    try:
        body: Any = loads(await request.read())
    except WireJSONError as err:
        return json_error(400, "bad_request", f"the body must be a JSON object: {err}")
    if not isinstance(body, dict) or "data" not in body:
        return json_error(400, "bad_request", 'the body must be {"channel": ..., "data": ...}')
    try:
        channel = validate_channel(body.get("channel"))
    except InvalidChannel as err:
        return json_error(400, err.code, err.message)
    gateway = request.app[GATEWAY]
    await gateway.hub.publish(channel, body["data"], None)
    return json_response({"published": True, "channel": channel}, status=202)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready once a key set is loaded. What is degraded is reported, but does not make a replica
    unready: cached keys still verify, and local traffic flows without Redis."""
    jwks = request.app[JWKS]
    degraded: dict[str, str] = {}
    if not request.app[BUS].connected:
        degraded["event_bus"] = "redis unreachable"
    if jwks.outage is not None:
        since, reason = jwks.outage
        when = datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds")
        degraded["issuer"] = f"unreachable since {when}: {reason}"
    body = {"ready": jwks.ready, "degraded": degraded}
    return json_response(body, status=200 if jwks.ready else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS].render(), headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST}
    )
