"""Prometheus metrics on a per-app registry, so that several apps in one process never clash."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.metrics import workers as worker_metrics

__all__ = ["Metrics"]

HANDSHAKE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
DELIVERY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge(
            "ws_connections",
            "Open WebSocket connections by state",
            ["state"],
            registry=r,
            multiprocess_mode="livesum",  # with workers: the sum over the live ones
        )
        self.auth = Counter(
            "ws_auth", "Authentication outcomes by code ('ok' for success)", ["outcome"], registry=r
        )
        self.renewals = Counter("ws_renewals", "Successful in-band token renewals", registry=r)
        self.expiries = Counter(
            "ws_expiries", "Sockets closed because the token expired", registry=r
        )
        self.revocations = Counter(
            "ws_revocations",
            "Sockets closed by a revocation (a bus event or the ledger after a gap)",
            registry=r,
        )
        self.warnings = Counter("ws_expiry_warnings", "token_expiring messages sent", registry=r)
        self.disconnects = Counter(
            "ws_disconnects",
            "Ended WebSocket sessions by who closed first (server, client, or lost: no close"
            " frame) and close code",
            ["by", "code"],
            registry=r,
        )
        self.jwks_fetches = Counter(
            "ws_jwks_fetches", "JWKS fetches by outcome", ["outcome"], registry=r
        )
        self.trusted_issuer_fetches = Counter(
            "ws_trusted_issuer_fetches",
            "Key set fetches from the WS_TRUSTED_ISSUERS by issuer and outcome",
            ["issuer", "outcome"],
            registry=r,
        )
        self.proxy_requests = Counter(
            "ws_proxy_requests",
            "Calls to the application's subscribe and publish proxies (WS_PROXY) by action and "
            "outcome: allow, deny, or unavailable (refused: proxy_unavailable)",
            ["action", "outcome"],
            registry=r,
        )
        self.messages_in = Counter("ws_messages_in", "Text frames received", registry=r)
        self.messages_out = Counter("ws_messages_out", "Text frames queued for sending", registry=r)
        self.local_only_publishes = Counter(
            "ws_local_only_publishes",
            "Channel messages the bus refused (Redis down), delivered to this replica's sockets only",
            registry=r,
        )
        self.delivery_failures = Counter(
            "ws_delivery_failures",
            "Deliveries to one subscriber that raised (a bug): the others still got the message",
            registry=r,
        )
        self.recoveries = Counter(
            "ws_recoveries",
            "Subscriptions with since: recovered, not_recovered (resynchronise), or unavailable",
            ["outcome"],
            registry=r,
        )
        self.ledger_checks = Counter(
            "ws_ledger_checks",
            "Revocation ledger checks at auth and renewal: ok, revoked, or unavailable (accepted)",
            ["outcome"],
            registry=r,
        )
        self.reconciliations = Counter(
            "ws_reconciliations",
            "Live sockets re-checked against the ledger after a bus reconnection, by outcome",
            ["outcome"],
            registry=r,
        )
        self.user_limit_checks = Counter(
            "ws_user_limit_checks",
            "Per-user caps checked across replicas in Redis: ok, full, or unavailable (admitted)",
            ["outcome"],
            registry=r,
        )
        self.redis_batches = Histogram(
            "ws_redis_batch_size",
            "Handshake checks that shared one Redis round trip, by check: ledger (revocations), "
            "slots (the per-user cap). Its _count is the round trips, its _sum the checks",
            ["check"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        # Copied from the bus every second (the app's _gauges_ctx).
        self.bus_connected = Gauge(
            "ws_event_bus_connected",
            "1 while the event bus reaches Redis (always 1 in process)",
            registry=r,
            multiprocess_mode="livemin",  # with workers: 0 when any worker is cut off
        )
        self.handshake = Histogram(
            "ws_handshake_duration_seconds",
            "From the upgrade request to the socket authenticated (auth_success sent), whether "
            "by the auth message, the bearer subprotocol or a ticket",
            buckets=HANDSHAKE_BUCKETS,
            registry=r,
        )
        self.delivery = Histogram(
            "ws_publish_to_deliver_seconds",
            "From a message's publish (its ts, on the publishing replica) to its fan-out on "
            "this replica, once per message and replica (across replicas: clock skew included)",
            buckets=DELIVERY_BUCKETS,
            registry=r,
        )
        self.draining = Gauge(
            "ws_draining",
            "1 while the replica drains (SIGTERM): unready, closing its sockets over "
            "WS_DRAIN_SECONDS",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.limit_hits = Counter(
            "ws_limit_hits",
            "Sockets or requests refused or closed by a resource limit, by limit",
            ["limit"],
            registry=r,
        )
        self.webhook_events = Counter(
            "ws_webhook_events",
            "Webhook events: queued, delivered (the app answered 2xx), dropped (the queue was "
            "full), undeliverable (the app refused the event alone as too large: 413)",
            ["outcome"],
            registry=r,
        )
        self.webhook_posts = Counter(
            "ws_webhook_posts",
            "Webhook POST attempts: ok, too_large (413), refused (other non-2xx), timeout, "
            "unreachable",
            ["outcome"],
            registry=r,
        )
        # Children used on every handshake, looked up once (``labels()`` is a locked dict lookup).
        self.awaiting_auth = self.connections.labels("awaiting_auth")
        self.authenticated = self.connections.labels("authenticated")
        self.auth_ok = self.auth.labels("ok")
        self.outbox_overflows = self.limit_hits.labels("outbox_bytes")
        self.runtime = worker_metrics.runtime_collectors(r)

    def render(self) -> bytes:
        return worker_metrics.render(self.registry, self.runtime)
