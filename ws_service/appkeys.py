"""Every piece of ws_service app state, under typed keys."""

from __future__ import annotations

from aiohttp import web

from shared.bus import EventBus
from shared.http.jwks import JwksCache
from shared.once import UsedOnce
from shared.redis.ledger import RedisRevocationLedger
from ws_service.domain.control import ControlPlane
from ws_service.domain.gateway import Gateway
from ws_service.domain.webhooks import Events
from ws_service.metrics import Metrics
from ws_service.peer import WebSocketPeer
from ws_service.settings import Settings

__all__ = [
    "BUS",
    "CONTROL",
    "GATEWAY",
    "JWKS",
    "LEDGER",
    "METRICS",
    "SETTINGS",
    "SOCKETS",
    "TRUSTED_KEYS",
    "USED_ONCE",
]

SETTINGS = web.AppKey("settings", Settings)
BUS = web.AppKey("bus", EventBus)
METRICS = web.AppKey("metrics", Metrics)
JWKS = web.AppKey("jwks", JwksCache)
"""auth_service's key set."""
TRUSTED_KEYS = web.AppKey("trusted_keys", dict[str, JwksCache])
"""The key set of each of ``WS_TRUSTED_ISSUERS``, by issuer."""
GATEWAY = web.AppKey("gateway", Gateway)
CONTROL = web.AppKey("control", ControlPlane)
EVENTS = web.AppKey("events", Events)
"""The webhook events every socket reports (to nothing without ``WS_WEBHOOK_URL``)."""
LEDGER = web.AppKey("revocation_ledger", RedisRevocationLedger)
"""Set only when ``REDIS_URL`` is: read it with ``app.get(LEDGER)``."""
USED_ONCE = web.AppKey("used_once", UsedOnce)
"""Redeemed tickets and the ``jti`` of DPoP proofs: Redis when configured, so each works once on
every replica together."""
SOCKETS = web.AppKey("sockets", set[WebSocketPeer])
