"""Prometheus metrics, in a registry per app so several apps can live in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.logins = Counter(
            "auth_logins", "Login attempts by outcome", ["outcome"], registry=self.registry
        )
        self.password_checks = Counter(
            "auth_password_verifications",
            "Passwords checked with argon2 (login attempts the throttle let through)",
            registry=self.registry,
        )
        self.refreshes = Counter(
            "auth_refreshes", "Refresh attempts by outcome", ["outcome"], registry=self.registry
        )
        self.reuse_detected = Counter(
            "auth_refresh_reuse_detected",
            "Rotated refresh tokens presented again (family revoked)",
            registry=self.registry,
        )
        self.exchanges = Counter(
            "auth_token_exchanges",
            "Token exchanges by app backends, by outcome (ok or the OAuth error code)",
            ["outcome"],
            registry=self.registry,
        )
        self.provider_key_fetches = Counter(
            "auth_provider_jwks_fetches",
            "Fetches of trusted identity providers' key sets, by issuer and outcome (ok, error, "
            "empty)",
            ["issuer", "outcome"],
            registry=self.registry,
        )
        self.tokens_issued = Counter(
            "auth_tokens_issued", "Access tokens issued by grant", ["grant"], registry=self.registry
        )
        self.key_rotations = Counter(
            "auth_key_rotations", "Signing keys created", registry=self.registry
        )
        self.outbox_events = Counter(
            "auth_outbox_events",
            "Outbox events by outcome: delivered, retry (failed, tried again later), dead_letter",
            ["outcome"],
            registry=self.registry,
        )
        self.limit_hits = Counter(
            "auth_limit_hits",
            "Connections or requests refused or closed by a resource limit, by limit",
            ["limit"],
            registry=self.registry,
        )
        # Copied from the bus and the outbox publisher every second (the app's gauges_ctx).
        self.bus_connected = Gauge(
            "auth_event_bus_connected",
            "1 while the event bus reaches Redis (always 1 in process)",
            registry=self.registry,
            multiprocess_mode="livemin",  # with workers: 0 when any worker is cut off
        )
        self.outbox_pending = Gauge(
            "auth_outbox_pending",
            "1 while events the bus refused wait in the database outbox",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.request_seconds = Histogram(
            "auth_http_request_duration_seconds",
            "HTTP request latency",
            ["route", "method", "status"],
            registry=self.registry,
        )
