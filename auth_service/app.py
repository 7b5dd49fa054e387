"""The auth_service application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from auth_service import browser
from auth_service.appkeys import (
    BUS,
    KEYRING,
    METRICS,
    PROVIDER_KEYS,
    PUBLISHER,
    SERVICE,
    SETTINGS,
    STORE,
)
from auth_service.domain.clients import ClientRegistry
from auth_service.domain.dpop import DpopGate
from auth_service.domain.federation import IssuerKeys
from auth_service.domain.keyring import KeyCipher, KeyRing, RotationPolicy
from auth_service.domain.outbox import EventPublisher, OutboxStatus
from auth_service.domain.passwords import Passwords
from auth_service.domain.service import AuthService, IssuerPolicy, Publish
from auth_service.domain.store import Store
from auth_service.domain.throttle import LoginThrottle
from auth_service.domain.tokens import TokenIssuer
from auth_service.handlers import routes
from auth_service.http import error_middleware, metrics_middleware
from auth_service.metrics import Metrics
from auth_service.provider_keys import ProviderKeys
from auth_service.settings import Settings
from auth_service.store import open_store
from realtime_gateway_protocol.key_events import KEYS_TOPIC, decode_key_event
from realtime_gateway_protocol.tasks import cancel_and_wait, raise_if_cancelled
from shared.bus import EventBus
from shared.config.env import redact_url
from shared.dpop import Nonces, ProofVerifier
from shared.http import access
from shared.http.dpop import NONCE_HEADER
from shared.http.openapi import openapi_route
from shared.http.serve import HTTP_TIMEOUTS
from shared.metrics.mirrored import mirrored
from shared.once import LocalUsedOnce, UsedOnce
from shared.redis.bus import open_bus
from shared.redis.ledger import RedisRevocationLedger
from shared.redis.once import open_used_once

__all__ = ["build_keyring", "build_service", "create_app"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
PURGE_INTERVAL = 3600.0


def build_keyring(settings: Settings, store: Store) -> KeyRing:
    policy = RotationPolicy(
        interval=settings.key_rotation_interval,
        jwks_max_age=settings.jwks_max_age,
        access_token_ttl=settings.access_token_ttl,
    )
    return KeyRing(store, KeyCipher(settings.key_encryption_secrets), policy)


def build_service(
    settings: Settings,
    store: Store,
    ring: KeyRing,
    publish: Publish,
    metrics: Metrics | None = None,
    clock: Callable[[], float] = time.time,
    provider_keys: IssuerKeys | None = None,
    used: UsedOnce | None = None,
) -> AuthService:
    """``used`` spends DPoP proofs (shared by the replicas); the commands, which check none,
    leave it to this process."""
    throttle = LoginThrottle(store)
    return AuthService(
        store,
        TokenIssuer(
            ring,
            issuer=settings.issuer,
            audience=settings.audience,
            ttl=settings.access_token_ttl,
            client_id=settings.client_id,
        ),
        Passwords() if metrics is None else Passwords(on_verify=metrics.password_checks.inc),
        throttle,
        IssuerPolicy(
            refresh_token_ttl=settings.refresh_token_ttl,
            session_lifetime=settings.session_lifetime,
            refresh_reuse_grace=settings.refresh_reuse_grace,
            default_scope=settings.default_scope,
            allow_registration=settings.allow_registration,
        ),
        publish,
        clock,
        clients=ClientRegistry(store, KeyCipher(settings.key_encryption_secrets), throttle, clock),
        issuer_keys=provider_keys,
        dpop=DpopGate(
            ProofVerifier(used or LocalUsedOnce(clock), clock),
            settings.dpop,
            Nonces(dpop_nonce_key(settings.key_encryption_secrets[0]), clock)
            if settings.dpop_nonce
            else None,
        ),
    )


def dpop_nonce_key(secret: str) -> bytes:
    """The key of the DPoP server nonces, derived from the first key-encryption secret: every
    replica issues and checks the same nonces."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"auth_service dpop nonce")
    return hkdf.derive(secret.encode())


def create_app(
    settings: Settings, *, bus: EventBus | None = None, clock: Callable[[], float] = time.time
) -> web.Application:
    """Build the app; a ``bus`` passed in is shared (the embedded launcher) and not closed here.
    ``clock`` is the domain's notion of now (tests move it instead of sleeping)."""
    app = web.Application(
        client_max_size=MAX_BODY_BYTES, middlewares=[metrics_middleware, error_middleware]
    )
    access.setup(app)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[HTTP_TIMEOUTS] = app[METRICS].limit_hits.labels("http_timeout").inc

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        app[STORE] = await open_store(settings.database_url, settings.database_timeout)
        yield
        await app[STORE].close()

    async def bus_ctx(app: web.Application) -> AsyncIterator[None]:
        app[BUS] = await open_bus(settings.redis_url) if bus is None else bus
        ledger = RedisRevocationLedger(settings.redis_url) if settings.redis_url else None
        outbox_events = app[METRICS].outbox_events
        app[PUBLISHER] = EventPublisher(
            app[BUS],
            app[STORE],
            ledger,
            clock,
            on_outcome=lambda outcome, events: outbox_events.labels(outcome).inc(events),
        )
        yield
        if ledger is not None:
            await ledger.close()
        if bus is None:
            await app[BUS].close()

    async def gauges_ctx(app: web.Application) -> AsyncIterator[None]:
        metrics = app[METRICS]
        async with mirrored(
            [
                (metrics.bus_connected, lambda: app[BUS].connected),
                (
                    metrics.outbox_pending,
                    lambda: app[PUBLISHER].status is not OutboxStatus.CLEAR,
                ),
            ]
        ):
            yield

    async def domain_ctx(app: web.Application) -> AsyncIterator[None]:
        ring = build_keyring(settings, app[STORE])
        await ring.open(settings.secrets_source, redact_url(settings.database_url))
        if await ring.maintain(clock()):
            app[METRICS].key_rotations.inc()
        app[KEYRING] = ring
        used = open_used_once(settings.redis_url)
        app[SERVICE] = build_service(
            settings,
            app[STORE],
            ring,
            app[PUBLISHER],
            app[METRICS],
            clock,
            app[PROVIDER_KEYS],
            used,
        )
        tasks = [
            asyncio.create_task(maintenance_loop(app, clock)),
            asyncio.create_task(outbox_loop(app[PUBLISHER])),
        ]
        reloads: set[asyncio.Task[None]] = set()

        def on_key_announced(topic: str, payload: str) -> None:
            try:
                decode_key_event(payload)
            except ValueError as exc:
                log.warning("ignoring a malformed key announcement", extra={"reason": str(exc)})
                return
            task = asyncio.get_running_loop().create_task(reload_keys(ring))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        unsubscribe = app[BUS].subscribe(KEYS_TOPIC, on_key_announced)
        # An announcement sent while this replica was cut off from Redis (the outbox's, as soon
        # as Redis is back, may go before this replica listens again) is lost to it: it signed
        # with a withdrawn key, and its key set listed it, until the timer's reload.
        stop_reloading = app[BUS].add_reconnect_listener(lambda: reload_keys(ring, "reconnect"))
        try:
            await app[BUS].check_subscriptions()
            yield
        finally:
            stop_reloading()
            unsubscribe()
            await cancel_and_wait(*tasks, *reloads)
            await used.close()

    async def provider_keys_ctx(app: web.Application) -> AsyncIterator[None]:
        """The trusted identity providers' key sets, over an HTTP session of their own."""
        fetches = app[METRICS].provider_key_fetches
        async with aiohttp.ClientSession() as session:
            app[PROVIDER_KEYS] = ProviderKeys(
                session, on_fetch=lambda issuer, outcome: fetches.labels(issuer, outcome).inc()
            )
            yield
            await app[PROVIDER_KEYS].close()

    app.cleanup_ctx.extend([store_ctx, bus_ctx, gauges_ctx, provider_keys_ctx, domain_ctx])
    app.on_response_prepare.append(_dpop_nonce)
    app.add_routes([*routes, openapi_route(Path(__file__).with_name("openapi.json"))])
    browser.setup(app, settings)
    return app


async def replay_revocations(app: web.Application) -> int:
    """Every revocation still in force, announced on this app's bus again (see
    :meth:`EventPublisher.replay_in_force`): for a composition whose gateway shares an in-process
    bus with this app, once that gateway listens."""
    return await app[PUBLISHER].replay_in_force()


async def _dpop_nonce(request: web.Request, response: web.StreamResponse) -> None:
    """With server nonces on, every API response carries a fresh one (RFC 9449 section 8.2), a
    refusal asking for one (``use_dpop_nonce``) included."""
    service = request.app.get(SERVICE)
    nonces = service.dpop.nonces if service is not None else None
    if nonces is not None and request.path.startswith(browser.API_PREFIX):
        response.headers[NONCE_HEADER] = nonces.issue()


def maintenance_interval(settings: Settings) -> float:
    """Reload often enough that a key created by another replica is known long before it signs."""
    return max(1.0, min(30.0, settings.jwks_max_age / 4))


BUS_DOWN_RELOAD = 2.0


async def maintenance_loop(app: web.Application, clock: Callable[[], float]) -> None:
    """Maintain the ring every interval; while the bus is down, reload it every
    ``BUS_DOWN_RELOAD`` seconds in between: a withdrawal announced meanwhile reaches nobody, and
    this replica would sign with the withdrawn key until its next maintenance (up to 30 s; an
    outside probe saw 5-20 s). A reload is one query while the keys are known."""
    interval = maintenance_interval(app[SETTINGS])
    bus = app[BUS]
    loop = asyncio.get_running_loop()
    last_purge = 0.0
    due = loop.time() + interval
    while True:
        raise_if_cancelled()  # a cancel the Exceptions below took for a timeout
        await asyncio.sleep(max(0.0, min(due - loop.time(), BUS_DOWN_RELOAD)))
        if loop.time() < due:
            if not bus.connected:
                with contextlib.suppress(Exception):  # the maintenance below logs a failing store
                    await app[KEYRING].reload()
            continue
        due = loop.time() + interval
        now = clock()
        try:
            if await app[KEYRING].maintain(now):
                app[METRICS].key_rotations.inc()
            if now - last_purge >= PURGE_INTERVAL:
                await app[STORE].purge_expired(now)
                last_purge = now
        except Exception:
            log.exception("key ring maintenance failed; retrying")


async def reload_keys(ring: KeyRing, reason: str = "announcement") -> None:
    """A rotation or a withdrawal was announced (``keys rotate``/``keys revoke``, another
    replica), or may have been while the bus was cut off (``reason``: ``reconnect``): load the
    new key, or drop the withdrawn one, now."""
    try:
        await ring.reload()
    except Exception:
        log.exception("key ring reload failed; the timer retries", extra={"on": reason})
    else:
        log.info("key ring reloaded", extra={"on": reason})


OUTBOX_INTERVAL = 1.0


async def outbox_loop(publisher: EventPublisher) -> None:
    """Deliver revocations the bus refused, as soon as it takes them again, and write the ledger
    again when Redis lost it (within a second). Neither call raises (each logs and reports its
    failures), so only cancellation ends this loop."""
    while True:
        await publisher.restore_ledger()
        await publisher.flush()
        raise_if_cancelled()  # a cancel either took for a Redis timeout ends the loop here
        await asyncio.sleep(OUTBOX_INTERVAL)
