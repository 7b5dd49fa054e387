"""The ws_service application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

from realtime_gateway_protocol.close_codes import Disconnect
from realtime_gateway_protocol.events import REVOCATIONS_TOPIC
from realtime_gateway_protocol.key_events import KEYS_TOPIC
from realtime_gateway_protocol.tasks import cancel_and_wait
from shared.bus import BusUnavailable, EventBus
from shared.config.env import ConfigError
from shared.http.responses import http_exception_json
from shared.http.serve import DRAIN, HTTP_TIMEOUTS
from shared.metrics.mirrored import mirrored
from shared.redis.bus import open_bus
from shared.redis.ledger import RedisRevocationLedger
from ws_service import handlers, handshake
from ws_service.appkeys import BUS, GATEWAY, JWKS, LEDGER, METRICS, SETTINGS, SOCKETS
from ws_service.domain.gateway import Gateway
from ws_service.domain.history import History, MemoryHistory
from ws_service.domain.hub import Hub
from ws_service.domain.presence import MemoryPresence, Presence
from ws_service.domain.revocations import RevocationRegistry
from ws_service.domain.user_slots import UserSlots
from ws_service.domain.verify import TokenVerifier
from ws_service.drain import SocketDrain
from ws_service.jwks import JwksCache
from ws_service.metrics import Metrics
from ws_service.redis.client import open_redis
from ws_service.redis.history import RedisHistory
from ws_service.redis.presence import RedisPresence
from ws_service.redis.slots import RedisUserSlots
from ws_service.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(settings: Settings, *, bus: EventBus | None = None) -> web.Application:
    """Build the app. Without ``bus`` it opens its own from ``settings.redis_url`` (Redis, or an
    in-process bus when empty); the embedded launcher passes the bus it shares with auth_service so
    that a logout reaches the sockets. ``redis_url`` also enables the revocation ledger."""
    if bus is None and not settings.redis_url and not settings.local_bus:
        raise ConfigError(
            "ws_service has no event bus that reaches auth_service, so it would miss every "
            "logout: set REDIS_URL (the same Redis as auth_service), or WS_LOCAL_BUS=1 to accept "
            "an in-process bus that hears no revocation from another process"
        )
    app = web.Application(middlewares=[_json_errors])
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[HTTP_TIMEOUTS] = app[METRICS].limit_hits.labels("http_timeout").inc
    app[SOCKETS] = set()  # each handler removes its own peer
    if settings.redis_url:
        # Only a replica with peers drains: alone (embedded) there is nowhere else to go, and
        # SIGTERM closes at once with 1001.
        app[DRAIN] = SocketDrain(app)
    app.cleanup_ctx.append(_bus_ctx(bus))
    app.cleanup_ctx.append(_gauges_ctx)
    app.cleanup_ctx.append(_ledger_ctx)
    app.cleanup_ctx.append(_gateway_ctx)
    app.cleanup_ctx.append(_refresh_ctx)
    app.cleanup_ctx.append(handshake.tickets_ctx)
    app.on_shutdown.append(_close_sockets)
    app.router.add_get("/ws", handlers.websocket)
    app.router.add_post("/v1/publish", handlers.publish)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics)
    return app


def _bus_ctx(
    bus: EventBus | None,
) -> Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[BUS] = bus if bus is not None else await open_bus(app[SETTINGS].redis_url)
        yield
        if bus is None:
            await app[BUS].close()

    return ctx


async def _gauges_ctx(app: web.Application) -> AsyncIterator[None]:
    async with mirrored([(app[METRICS].bus_connected, lambda: app[BUS].connected)]):
        yield


async def _ledger_ctx(app: web.Application) -> AsyncIterator[None]:
    """The Redis record of revocations, checked at every auth when the deployment is scaled out."""
    url = app[SETTINGS].redis_url
    if not url:
        yield
        return
    app[LEDGER] = RedisRevocationLedger(url)
    yield
    await app[LEDGER].close()


@contextlib.asynccontextmanager
async def _backends(
    settings: Settings, bus: EventBus
) -> AsyncIterator[tuple[History, Presence, UserSlots | None]]:
    """History, presence and the per-user cap in Redis when the deployment is scaled out; else
    in this process (where the gateway's own count of a user's sockets is the whole count)."""
    if not settings.redis_url:
        embedded = MemoryHistory(
            bus.publish,
            max_bytes=settings.history_max_bytes,
            user_bytes=settings.history_user_bytes,
        )
        try:
            yield embedded, MemoryPresence(bus.publish), None
        finally:
            embedded.close()
        return
    redis = open_redis(settings.redis_url)
    ttl = settings.presence_ttl
    try:
        yield (
            RedisHistory(redis, user_bytes=settings.history_user_bytes),
            RedisPresence(redis, ttl=ttl),
            RedisUserSlots(redis, ttl=ttl),
        )
    finally:
        await redis.aclose()


async def _gateway_ctx(app: web.Application) -> AsyncIterator[None]:
    """The JWKS session and refresh task, the verifier, the channel backends and the bus
    subscriptions."""
    settings = app[SETTINGS]
    metrics = app[METRICS]
    bus = app[BUS]
    async with (
        aiohttp.ClientSession() as session,
        _backends(settings, bus) as (history, presence, slots),
    ):
        jwks = JwksCache(
            session,
            settings.jwks_url,
            min_ttl=settings.jwks_min_ttl,
            max_ttl=settings.jwks_max_ttl,
            refetch_interval=settings.jwks_refetch_interval,
            fetch_timeout=settings.jwks_fetch_timeout,
            on_fetch=lambda outcome: metrics.jwks_fetches.labels(outcome).inc(),
            # The gateway is made below, with the verifier over this cache; the cache reports
            # only from its fetch task and bus handlers, which start after that.
            on_dropped=lambda kids: gateway.keys_dropped(kids),
        )
        revocations = RevocationRegistry(leeway=settings.leeway)
        verifier = TokenVerifier(
            jwks,
            revocations,
            issuer=settings.issuer,
            audience=settings.audience,
            leeway=settings.leeway,
        )
        hub = Hub(
            bus,
            history,
            presence,
            settings.namespaces,
            on_delivered=metrics.messages_out.inc,
            on_local_only=metrics.local_only_publishes.inc,
            on_delivery_failed=metrics.delivery_failures.inc,
            on_delivery_delay=metrics.delivery.observe,
            sync_timeout=settings.subscribe_sync_timeout,
            presence_debounce=settings.presence_debounce,
        )
        gateway = Gateway(
            settings.limits,
            verifier,
            revocations,
            hub,
            metrics,
            ledger=app.get(LEDGER),
            slots=slots,
        )
        app[JWKS] = jwks
        app[GATEWAY] = gateway
        unsubscribe = bus.subscribe(REVOCATIONS_TOPIC, gateway.on_revocation)
        unsubscribe_keys = bus.subscribe(KEYS_TOPIC, gateway.on_key_event)
        stop_reconciling = bus.add_reconnect_listener(gateway.reconcile)
        stop_refetching = bus.add_reconnect_listener(gateway.refresh_keys)
        stop_restoring = bus.add_reconnect_listener(hub.restore_presence)
        stop_restoring_slots = bus.add_reconnect_listener(gateway.restore_slots)
        refresher = asyncio.get_running_loop().create_task(jwks.run())
        try:
            yield
        finally:
            stop_restoring_slots()
            stop_restoring()
            stop_refetching()
            stop_reconciling()
            unsubscribe_keys()
            unsubscribe()
            await cancel_and_wait(refresher)
            await jwks.close()
            await gateway.close()
            await hub.close()


async def _refresh_ctx(app: web.Application) -> AsyncIterator[None]:
    """In Redis a presence entry and a connection slot lapse unless their replica refreshes them:
    every third of the presence TTL, one pipeline for each kind."""
    settings = app[SETTINGS]
    if not settings.redis_url:
        yield
        return
    gateway = app[GATEWAY]

    async def refresh_forever() -> None:
        while True:
            await asyncio.sleep(settings.presence_ttl / 3)
            for refresh in (gateway.hub.refresh_presence, gateway.refresh_slots):
                try:
                    await refresh()
                except BusUnavailable as exc:
                    log.warning("presence or slot refresh failed", extra={"error": str(exc)})

    task = asyncio.get_running_loop().create_task(refresh_forever(), name="redis-refresh")
    yield
    await cancel_and_wait(task)


async def _close_sockets(app: web.Application) -> None:
    """Close every live socket with 1001 (each handler completes the closing handshake) within
    the shutdown timeout: all of them on SIGINT, what the drain left on SIGTERM."""
    live = app[SOCKETS]
    peers = tuple(live)
    if not peers:
        return
    going = Disconnect.GOING_AWAY
    for peer in peers:
        peer.close(going.code, going.reason)
    done = asyncio.gather(*(peer.wait_finished() for peer in peers))
    try:
        await asyncio.wait_for(done, app[SETTINGS].shutdown_timeout)
    except TimeoutError:
        log.warning("some sockets did not close in time", extra={"count": len(peers)})


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every HTTP refusal is a JSON body, never aiohttp's HTML or text page."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_exception_json(exc, exc.reason.lower().replace(" ", "_"))
