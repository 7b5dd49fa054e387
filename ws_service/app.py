"""The ws_service application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

import aiohttp
from aiohttp import web

from realtime_gateway_protocol.access_token import ALGORITHM
from realtime_gateway_protocol.close_codes import Disconnect
from realtime_gateway_protocol.events import LEDGER_RESTORED_TOPIC, REVOCATIONS_TOPIC
from realtime_gateway_protocol.key_events import KEYS_TOPIC
from realtime_gateway_protocol.tasks import cancel_and_wait
from shared.bus import BusUnavailable, EventBus
from shared.config.env import ConfigError
from shared.http import access
from shared.http.jwks import JwksCache
from shared.http.openapi import openapi_route
from shared.http.responses import http_exception_json
from shared.http.serve import DRAIN, HTTP_TIMEOUTS
from shared.metrics.mirrored import mirrored
from shared.redis.bus import open_bus
from shared.redis.ledger import RedisRevocationLedger
from shared.redis.once import open_used_once
from ws_service import api, handlers
from ws_service.appkeys import (
    BUS,
    CONTROL,
    EVENTS,
    GATEWAY,
    JWKS,
    LEDGER,
    METRICS,
    SETTINGS,
    SOCKETS,
    TRUSTED_KEYS,
    USED_ONCE,
)
from ws_service.domain.clock import LoopClock
from ws_service.domain.control import ControlPlane, LocalReplicas, Replicas
from ws_service.domain.gateway import Gateway
from ws_service.domain.history import History, MemoryHistory
from ws_service.domain.hub import Hub, channel_topic
from ws_service.domain.presence import MemoryPresence, Presence, presence_topic
from ws_service.domain.proxy import ProxyGate
from ws_service.domain.revocations import RevocationRegistry
from ws_service.domain.user_slots import UserSlots
from ws_service.domain.verify import Issuer, TokenVerifier
from ws_service.domain.webhooks import Events
from ws_service.drain import SocketDrain
from ws_service.jwks import IssuerKeys
from ws_service.metrics import Metrics
from ws_service.proxy import HttpAppProxy, open_proxy_session
from ws_service.redis.client import open_redis
from ws_service.redis.history import RedisHistory
from ws_service.redis.presence import RedisPresence
from ws_service.redis.replicas import RedisReplicas
from ws_service.redis.slots import RedisUserSlots
from ws_service.settings import Settings, TrustedIssuer
from ws_service.webhooks.delivery import Deliverer, QueueSink, Target
from ws_service.webhooks.queue import MemoryQueue, RedisQueue, WebhookQueue

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
    access.setup(app)
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
    app.cleanup_ctx.append(_webhooks_ctx)
    app.cleanup_ctx.append(_used_once_ctx)
    app.cleanup_ctx.append(_gateway_ctx)
    app.cleanup_ctx.append(_refresh_ctx)
    app.on_shutdown.append(_close_sockets)
    app.router.add_get("/ws", handlers.websocket)
    app.router.add_routes(api.ROUTES)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_routes([openapi_route(Path(__file__).with_name("openapi.json"))])
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
    app[LEDGER] = RedisRevocationLedger(
        url, on_batch=app[METRICS].redis_batches.labels("ledger").observe
    )
    yield
    await app[LEDGER].close()


async def _used_once_ctx(app: web.Application) -> AsyncIterator[None]:
    """Redeemed tickets and spent DPoP proofs: Redis when configured, so each works once across
    every replica."""
    app[USED_ONCE] = open_used_once(app[SETTINGS].redis_url)
    yield
    await app[USED_ONCE].close()


async def _webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    """The webhook queue (a Redis stream when scaled out, else a bounded deque) and this replica's
    deliverer; without ``WS_WEBHOOK_URL`` an ``Events`` that reports nothing."""
    settings, metrics = app[SETTINGS], app[METRICS]
    if not settings.webhook_url:
        app[EVENTS] = Events()
        yield
        return
    redis = open_redis(settings.redis_url) if settings.redis_url else None
    queue: WebhookQueue
    sink: QueueSink
    if redis is None:
        queue = MemoryQueue(settings.webhook_queue)
    else:
        queue = RedisQueue(
            redis,
            secrets.token_hex(6),
            limit=settings.webhook_queue,
            claim_idle=settings.webhook_claim_idle,
            on_dropped=lambda count: sink.dropped(count),
        )
        queue.start()
    sink = QueueSink(queue, metrics.webhook_events)
    app[EVENTS] = Events(sink)
    target = Target(
        settings.webhook_url,
        settings.webhook_secrets,
        timeout=settings.webhook_timeout,
        batch=settings.webhook_batch,
        batch_bytes=settings.webhook_batch_bytes,
        retry_cap=settings.webhook_retry_cap,
        keep_every=settings.webhook_claim_idle / 3,
    )
    async with aiohttp.ClientSession() as session:
        deliverer = Deliverer(
            session,
            queue,
            target,
            posts=metrics.webhook_posts,
            delivered=metrics.webhook_events.labels("delivered"),
            undeliverable=metrics.webhook_events.labels("undeliverable"),
        )
        task = asyncio.get_running_loop().create_task(deliverer.run(), name="webhooks")
        try:
            yield
        finally:
            await cancel_and_wait(task)
            await queue.close()
            if redis is not None:
                await redis.aclose()


@contextlib.asynccontextmanager
async def _backends(
    settings: Settings, bus: EventBus, events: Events, metrics: Metrics
) -> AsyncIterator[tuple[History, Presence, UserSlots | None, Replicas]]:
    """History, presence, the per-user cap and the replica registry in Redis when the deployment
    is scaled out; else in this process (where the gateway's own count of a user's sockets is the
    whole count)."""
    if not settings.redis_url:
        embedded = MemoryHistory(
            bus.publish,
            max_bytes=settings.history_max_bytes,
            user_bytes=settings.history_user_bytes,
        )
        try:
            presence = MemoryPresence(bus.publish, on_transition=events.presence)
            yield embedded, presence, None, LocalReplicas()
        finally:
            embedded.close()
        return
    redis = open_redis(settings.redis_url)
    ttl = settings.presence_ttl
    slots = RedisUserSlots(redis, ttl=ttl, on_batch=metrics.redis_batches.labels("slots").observe)
    try:
        yield (
            RedisHistory(redis, user_bytes=settings.history_user_bytes),
            RedisPresence(redis, ttl=ttl, on_transition=events.presence),
            slots,
            RedisReplicas(redis, ttl=ttl),
        )
    finally:
        await slots.close()
        await redis.aclose()


def _key_set(
    session: aiohttp.ClientSession,
    settings: Settings,
    url: str,
    algorithms: Iterable[str],
    on_fetch: Callable[[str], None],
    on_dropped: Callable[[frozenset[str]], None],
) -> JwksCache:
    """One issuer's key set, under the same cache rules as every other."""
    return JwksCache(
        session,
        url,
        algorithms=tuple(algorithms),
        min_ttl=settings.jwks_min_ttl,
        max_ttl=settings.jwks_max_ttl,
        refetch_interval=settings.jwks_refetch_interval,
        fetch_timeout=settings.jwks_fetch_timeout,
        on_fetch=on_fetch,
        on_dropped=on_dropped,
    )


def _trusted_issuer(
    session: aiohttp.ClientSession,
    settings: Settings,
    config: TrustedIssuer,
    metrics: Metrics,
    dropped: Callable[[frozenset[str]], None],
) -> tuple[Issuer, JwksCache]:
    """One of ``WS_TRUSTED_ISSUERS`` and its key set, whose dropped keys are reported as the
    issuer's own (``Issuer.key_ref``)."""
    cache = _key_set(
        session,
        settings,
        config.jwks_url,
        config.algorithms,
        lambda outcome: metrics.trusted_issuer_fetches.labels(config.issuer, outcome).inc(),
        lambda kids: dropped(frozenset(map(issuer.key_ref, kids))),
    )
    issuer = Issuer(
        config.issuer,
        IssuerKeys(cache),
        config.audience,
        frozenset(config.algorithms),
        config.username_claim,
        trusted=True,
    )
    return issuer, cache


@contextlib.asynccontextmanager
async def _proxies(settings: Settings, metrics: Metrics) -> AsyncIterator[ProxyGate | None]:
    """The application's subscribe and publish proxies (``WS_PROXY``), over a session of their
    own; ``None`` without any."""
    if not settings.proxy:
        yield None
        return
    async with open_proxy_session(settings.proxy_max_in_flight) as session:
        app_proxy = HttpAppProxy(
            session,
            settings.proxy_secrets,
            timeout=settings.proxy_timeout,
            max_in_flight=settings.proxy_max_in_flight,
            max_answer_bytes=settings.max_message_bytes,
            on_outcome=lambda action, outcome: metrics.proxy_requests.labels(action, outcome).inc(),
        )
        yield ProxyGate(app_proxy, LoopClock(), allow_ttl=settings.proxy_cache_ttl)


async def _gateway_ctx(app: web.Application) -> AsyncIterator[None]:
    """The JWKS session and refresh tasks (auth_service's key set and each trusted issuer's), the
    verifier, the channel backends, the application's proxies and the bus subscriptions."""
    settings = app[SETTINGS]
    metrics = app[METRICS]
    bus = app[BUS]
    async with (
        aiohttp.ClientSession() as session,
        _backends(settings, bus, app[EVENTS], metrics) as (history, presence, slots, replicas),
        _proxies(settings, metrics) as proxies,
    ):
        # The gateway is made below, with the verifier over these caches; a cache reports only
        # from its fetch task and bus handlers, which start after that.
        jwks = _key_set(
            session,
            settings,
            settings.jwks_url,
            (ALGORITHM,),
            lambda outcome: metrics.jwks_fetches.labels(outcome).inc(),
            lambda kids: gateway.keys_dropped(kids),
        )
        trusted = [
            _trusted_issuer(session, settings, config, metrics, lambda k: gateway.keys_dropped(k))
            for config in settings.trusted_issuers
        ]
        app[TRUSTED_KEYS] = {issuer.name: cache for issuer, cache in trusted}
        revocations = RevocationRegistry(leeway=settings.leeway)
        verifier = TokenVerifier(
            IssuerKeys(jwks),
            revocations,
            issuer=settings.issuer,
            audience=settings.audience,
            leeway=settings.leeway,
            trusted=[issuer for issuer, _ in trusted],
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
            events=app[EVENTS],
        )
        gateway = Gateway(
            settings.limits,
            verifier,
            revocations,
            hub,
            metrics,
            ledger=app.get(LEDGER),
            slots=slots,
            proxies=proxies,
            dpop=settings.dpop,
            used=app[USED_ONCE],
        )
        control = ControlPlane(bus, replicas, gateway, timeout=settings.api_timeout)
        app[JWKS] = jwks
        app[GATEWAY] = gateway
        app[CONTROL] = control
        await control.start()
        unsubscribe = bus.subscribe(REVOCATIONS_TOPIC, gateway.on_revocation)
        unsubscribe_keys = bus.subscribe(KEYS_TOPIC, gateway.on_key_event)
        unsubscribe_ledger = bus.subscribe(LEDGER_RESTORED_TOPIC, gateway.on_ledger_restored)
        stop_reconciling = bus.add_reconnect_listener(gateway.reconcile)
        stop_refetching = bus.add_reconnect_listener(gateway.refresh_keys)
        stop_restoring = bus.add_reconnect_listener(hub.restore_presence)
        stop_restoring_slots = bus.add_reconnect_listener(gateway.restore_slots)
        stop_registering = bus.add_reconnect_listener(control.register)
        caches = [jwks, *app[TRUSTED_KEYS].values()]
        refreshers = [asyncio.get_running_loop().create_task(cache.run()) for cache in caches]
        refreshers.append(asyncio.get_running_loop().create_task(_refetch_while_cut_off(app)))
        try:
            # A channel's topics too, which clients subscribe later: an ACL refusing them
            # stops start-up here, not the bus's link at the first client's subscription.
            await bus.check_subscriptions(
                (channel_topic(BUS_CHECK_CHANNEL), presence_topic(BUS_CHECK_CHANNEL))
            )
            yield
        finally:
            stop_registering()
            stop_restoring_slots()
            stop_restoring()
            stop_refetching()
            stop_reconciling()
            unsubscribe_ledger()
            unsubscribe_keys()
            unsubscribe()
            for refresher in refreshers:
                await cancel_and_wait(refresher)
            for cache in caches:
                await cache.close()
            await control.close()
            await gateway.close()
            await hub.close()


BUS_CHECK_CHANNEL = "bus check"
"""The channel whose topics start-up subscribes once to see that Redis's ACL lets this replica
subscribe a channel's: no client's, a channel name holds no space."""

BUS_DOWN_KEY_REFETCH = 10.0


async def _refetch_while_cut_off(app: web.Application) -> None:
    """While the bus is down no key announcement arrives: a key withdrawn meanwhile was trusted
    until the key set's TTL (``AUTH_JWKS_MAX_AGE``, 5 minutes by default), since the reconnection's
    refetch waits for Redis. Fetch the key set every ``BUS_DOWN_KEY_REFETCH`` seconds instead, as
    long as the bus is down (the auth replicas reload theirs every 2 s meanwhile)."""
    bus, gateway = app[BUS], app[GATEWAY]
    while True:
        await asyncio.sleep(BUS_DOWN_KEY_REFETCH)
        if not bus.connected:
            await gateway.refetch_keys("bus down")


async def _refresh_ctx(app: web.Application) -> AsyncIterator[None]:
    """In Redis a presence entry, a connection slot and a replica's registration lapse unless their
    replica refreshes them: every third of the presence TTL, one pipeline for each kind."""
    settings = app[SETTINGS]
    if not settings.redis_url:
        yield
        return
    gateway = app[GATEWAY]
    control = app[CONTROL]

    async def refresh_forever() -> None:
        while True:
            await asyncio.sleep(settings.presence_ttl / 3)
            for refresh in (gateway.hub.refresh_presence, gateway.refresh_slots):
                try:
                    await refresh()
                except BusUnavailable as exc:
                    log.warning("presence or slot refresh failed", extra={"error": str(exc)})
            await control.register()

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
def _json_errors(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Every HTTP refusal is a JSON body, never aiohttp's HTML or text page. The WebSocket
    handler answers its own (:func:`access.self_contained`), so no frame of this one waits as long
    as its socket lives."""
    if access.is_self_contained(request):
        return handler(request)
    return _json_refusals(request, handler)


async def _json_refusals(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_exception_json(exc)
