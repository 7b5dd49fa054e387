"""The ws_service application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

from shared.bus import EventBus
from shared.bus_factory import open_bus
from shared.close_codes import Disconnect
from shared.envparse import ConfigError
from shared.events import REVOCATIONS_TOPIC
from shared.http_errors import http_exception_json
from shared.redis_ledger import RedisRevocationLedger
from ws_service import handlers, handshake
from ws_service.appkeys import BUS, GATEWAY, JWKS, LEDGER, METRICS, SETTINGS, SOCKETS
from ws_service.domain.gateway import Gateway
from ws_service.domain.hub import Hub
from ws_service.domain.revocations import RevocationRegistry
from ws_service.domain.verify import TokenVerifier
from ws_service.jwks import JwksCache
from ws_service.metrics import Metrics
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
    app[SOCKETS] = weakref.WeakSet()
    app.cleanup_ctx.append(_bus_ctx(bus))
    app.cleanup_ctx.append(_ledger_ctx)
    app.cleanup_ctx.append(_gateway_ctx)
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


async def _ledger_ctx(app: web.Application) -> AsyncIterator[None]:
    """The Redis record of revocations, checked at every auth when the deployment is scaled out."""
    url = app[SETTINGS].redis_url
    if not url:
        yield
        return
    app[LEDGER] = RedisRevocationLedger(url)
    yield
    await app[LEDGER].close()


async def _gateway_ctx(app: web.Application) -> AsyncIterator[None]:
    """The JWKS session and refresh task, the verifier and the bus subscriptions."""
    settings = app[SETTINGS]
    metrics = app[METRICS]
    async with aiohttp.ClientSession() as session:
        jwks = JwksCache(
            session,
            settings.jwks_url,
            min_ttl=settings.jwks_min_ttl,
            max_ttl=settings.jwks_max_ttl,
            refetch_interval=settings.jwks_refetch_interval,
            fetch_timeout=settings.jwks_fetch_timeout,
            on_fetch=lambda outcome: metrics.jwks_fetches.labels(outcome).inc(),
        )
        revocations = RevocationRegistry(leeway=settings.leeway)
        verifier = TokenVerifier(
            jwks,
            revocations,
            issuer=settings.issuer,
            audience=settings.audience,
            leeway=settings.leeway,
        )
        bus = app[BUS]
        hub = Hub(
            bus,
            on_delivered=metrics.messages_out.inc,
            on_local_only=metrics.local_only_publishes.inc,
            sync_timeout=settings.subscribe_sync_timeout,
        )
        gateway = Gateway(settings, verifier, revocations, hub, metrics, ledger=app.get(LEDGER))
        app[JWKS] = jwks
        app[GATEWAY] = gateway
        unsubscribe = bus.subscribe(REVOCATIONS_TOPIC, gateway.on_revocation)
        stop_reconciling = bus.add_reconnect_listener(gateway.reconcile)
        refresher = asyncio.get_running_loop().create_task(jwks.run())
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await jwks.close()
            stop_reconciling()
            unsubscribe()
            hub.close()


async def _close_sockets(app: web.Application) -> None:
    """Close every live socket with 1001 (each handler completes the closing handshake) within
    the shutdown timeout."""
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
