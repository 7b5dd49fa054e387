"""Prometheus metrics, in a registry per app so several apps can live in one process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from auth_service.domain.errors import AuthError
from shared.metrics import workers as worker_metrics

__all__ = ["Metrics", "timed"]

LOGIN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""A login is an argon2 check (tens of milliseconds, most of a core) and a few queries."""
GRANT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""A refresh is a few queries and a signature: milliseconds."""


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
        self.login_seconds = Histogram(
            "auth_login_duration_seconds",
            "Login latency, the password check included, by outcome ('ok' or an error code)",
            ["outcome"],
            buckets=LOGIN_BUCKETS,
            registry=self.registry,
        )
        self.grant_seconds = Histogram(
            "auth_token_grant_duration_seconds",
            "/v1/token latency by grant (refresh_token) and outcome ('ok' or an error code)",
            ["grant", "outcome"],
            buckets=GRANT_BUCKETS,
            registry=self.registry,
        )
        self.runtime = worker_metrics.runtime_collectors(self.registry)

    def render(self) -> bytes:
        return worker_metrics.render(self.registry, self.runtime)


@contextmanager
def timed(histogram: Histogram, *labels: str) -> Iterator[None]:
    """Observe the block's duration under ``labels`` and its outcome: ``ok``, or the code of the
    ``AuthError`` it raised."""
    started = time.perf_counter()
    outcome = "ok"
    try:
        yield
    except AuthError as exc:
        outcome = exc.code
        raise
    finally:
        histogram.labels(*labels, outcome).observe(time.perf_counter() - started)
