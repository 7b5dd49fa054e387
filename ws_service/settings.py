"""ws_service configuration, read once from the environment at start-up."""

from __future__ import annotations

import json
import math
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from realtime_gateway_protocol.frames import PREAUTH_MAX_BYTES
from shared.config.env import (
    MAX_LIFETIME,
    MAX_PORT,
    MAX_TIMEOUT,
    ConfigError,
    auth_issuer,
    bearer_credentials,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_origins,
    env_secret,
    env_str,
    http_url,
    redact_url,
    split_list,
)
from shared.config.kept_secret import kept_secret
from shared.config.tls import server_context
from shared.dpop import normalized_url
from shared.http.forwarded import trusted_proxies
from shared.http.jwks import ALGORITHMS
from shared.redis.connect import env_redis_url
from ws_service.domain.history import HistoryPolicy
from ws_service.domain.limits import Limits
from ws_service.domain.namespaces import USER_NAMESPACE, Namespace, Namespaces
from ws_service.domain.verify import DpopRules

__all__ = [
    "DEFAULT_HISTORY",
    "DEV_API_KEY_FILE",
    "Settings",
    "TrustedIssuer",
    "dev_api_key",
    "parse_history",
    "parse_proxy",
    "parse_trusted_issuers",
]

DEV_API_KEY_FILE = "dev-ws-api-key"
DEFAULT_HISTORY = "chat=100/300"
MAX_LEEWAY = 300
"""Seconds of clock skew at most: a leeway of days admitted tokens long expired."""
MAX_WEBHOOK_BATCH = 10_000
"""Events per webhook batch at most: the COUNT of a Redis XREADGROUP, which refused 1e20 (every
delivery failed, logged as an unreachable queue: an outside probe)."""
MAX_HISTORY_SIZE = 1_000_000
"""Messages a channel's history may keep at most (``WS_HISTORY``'s size)."""
MAX_HISTORY_TTL = MAX_LIFETIME
"""Seconds a message may stay in history at most (ten years). A ttl of ``nan`` failed every
publish, and on Redis a size or ttl past its 64-bit integers lost every message's history
without a word (an outside probe)."""


def parse_history(raw: str) -> dict[str, HistoryPolicy]:
    """``WS_HISTORY``: ``namespace=size/ttl seconds``, comma separated (``none`` for no history)."""
    policies: dict[str, HistoryPolicy] = {}
    if raw.strip().lower() == "none":
        return policies
    for item in filter(None, (part.strip() for part in raw.split(","))):
        namespace, _, spec = item.partition("=")
        size, _, ttl = spec.partition("/")
        try:
            policy = HistoryPolicy(int(size), float(ttl))
        except ValueError:
            raise ConfigError(
                f"WS_HISTORY entries are namespace=size/ttl (e.g. chat=100/300), got {item!r}"
            ) from None
        if not namespace.strip() or policy.size < 1 or not policy.ttl > 0:
            raise ConfigError(f"WS_HISTORY needs a namespace, size >= 1 and ttl > 0 in {item!r}")
        if policy.size > MAX_HISTORY_SIZE or not policy.ttl <= MAX_HISTORY_TTL:
            raise ConfigError(
                f"WS_HISTORY keeps at most {MAX_HISTORY_SIZE} messages for at most "
                f"{MAX_HISTORY_TTL} seconds, got {item!r}"
            )
        policies[namespace.strip()] = policy
    _no_user_namespace("WS_HISTORY", policies)
    return policies


_PROXY_ACTIONS = ("subscribe", "publish")
_NAMESPACE = re.compile(r"[A-Za-z0-9_.@-]+")


def _http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in {"http", "https"} and bool(parts.hostname)


def parse_proxy(raw: str) -> dict[str, dict[str, str]]:
    """``WS_PROXY``: whitespace-separated ``namespace.action=url`` (action ``subscribe`` or
    ``publish``, an http(s) URL), at most one per namespace and action; by namespace, then
    action."""
    proxies: dict[str, dict[str, str]] = {}
    for item in raw.split():
        target, _, url = item.partition("=")
        namespace, _, action = target.rpartition(".")
        if not _NAMESPACE.fullmatch(namespace) or action not in _PROXY_ACTIONS:
            raise ConfigError(
                "WS_PROXY entries are namespace.subscribe=url or namespace.publish=url, "
                f"got {redact_url(item)!r}"
            )
        if not _http_url(url):
            raise ConfigError(f"WS_PROXY {target}: {redact_url(url)!r} is not an http(s) URL")
        if action in proxies.get(namespace, {}):
            raise ConfigError(f"WS_PROXY names {target} twice")
        proxies.setdefault(namespace, {})[action] = url
    _no_user_namespace("WS_PROXY", proxies)
    return proxies


def _namespaces(raw: str) -> frozenset[str]:
    """``WS_PRESENCE``: comma-separated namespaces, or ``none``."""
    if raw.strip().lower() == "none":
        return frozenset()
    return frozenset(filter(None, (part.strip() for part in raw.split(","))))


def _no_user_namespace(name: str, namespaces: Iterable[str]) -> None:
    if USER_NAMESPACE in namespaces:
        raise ConfigError(f"{name} cannot include the private {USER_NAMESPACE} namespace")


@dataclass(frozen=True)
class TrustedIssuer:
    """An identity provider whose access tokens the gateway accepts beside auth_service's."""

    issuer: str
    jwks_url: str
    audience: str
    algorithms: tuple[str, ...]
    username_claim: str = "preferred_username"


_ISSUER_KEYS = {"issuer", "jwks_url", "audience", "algorithms", "username_claim"}


def parse_trusted_issuers(raw: str) -> tuple[TrustedIssuer, ...]:
    """``WS_TRUSTED_ISSUERS``: a JSON list of ``{"issuer", "jwks_url", "audience", "algorithms",
    "username_claim"?}``, each issuer once; algorithms are asymmetric (never ``none`` or HMAC)."""
    if not raw.strip():
        return ()
    try:
        items: Any = json.loads(raw)
    except ValueError:
        raise ConfigError("WS_TRUSTED_ISSUERS must be a JSON list of objects") from None
    if not isinstance(items, list):
        raise ConfigError("WS_TRUSTED_ISSUERS must be a JSON list of objects")
    issuers = tuple(_trusted_issuer(item) for item in items)
    names = [issuer.issuer for issuer in issuers]
    if len(set(names)) != len(names):
        raise ConfigError("WS_TRUSTED_ISSUERS names an issuer twice")
    return issuers


def _trusted_issuer(item: object) -> TrustedIssuer:
    if not isinstance(item, dict) or not item.keys() <= _ISSUER_KEYS:
        raise ConfigError(f"WS_TRUSTED_ISSUERS entries are objects of {sorted(_ISSUER_KEYS)}")

    def string(key: str, default: str | None = None) -> str:
        value = item.get(key, default)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"WS_TRUSTED_ISSUERS entries need {key}, a non-empty string")
        return value

    issuer, jwks_url = string("issuer"), string("jwks_url")
    if not _http_url(jwks_url):
        raise ConfigError(f"WS_TRUSTED_ISSUERS {issuer}: jwks_url must be an http(s) URL")
    algorithms = item.get("algorithms")
    if (
        not isinstance(algorithms, list)
        or not algorithms
        or not all(isinstance(a, str) and a in ALGORITHMS for a in algorithms)
    ):
        raise ConfigError(
            f"WS_TRUSTED_ISSUERS {issuer}: algorithms must be a non-empty list of "
            f"{', '.join(sorted(ALGORITHMS))} (never none or an HMAC)"
        )
    return TrustedIssuer(
        issuer=issuer,
        jwks_url=jwks_url,
        audience=string("audience"),
        algorithms=tuple(dict.fromkeys(algorithms)),
        username_claim=string("username_claim", "preferred_username"),
    )


@dataclass(frozen=True)
class Settings:
    """Everything the gateway needs; tests build it directly, ``python -m ws_service`` uses env."""

    jwks_url: str
    issuer: str
    host: str = "127.0.0.1"
    port: int = 8082
    audience: str = "ws"
    allowed_origins: tuple[str, ...] = ()
    auth_timeout: float = 10.0
    expiry_warning: float = 60.0
    key_withdrawal_grace: int = 10
    leeway: int = 5
    max_message_bytes: int = 65536
    api_keys: tuple[str, ...] = ()
    heartbeat: float = 30.0
    close_timeout: float = 5.0
    shutdown_timeout: float = 5.0
    drain_seconds: float = 30.0
    """On SIGTERM, the window the sockets' closes are spread over (``WS_DRAIN_SECONDS``)."""
    jwks_min_ttl: float = 60.0
    jwks_max_ttl: float = 3600.0
    jwks_refetch_interval: float = 10.0
    jwks_fetch_timeout: float = 5.0
    rate_per_second: float = 20.0
    rate_burst: int = 40
    rate_strikes: int = 20
    max_subscriptions: int = 100
    max_connections_per_user: int = 20
    max_violations: int = 5
    max_outbox_bytes: int = 1_048_576
    max_unauthenticated_per_address: int = 32
    preauth_frame_rate: float = 2.0
    preauth_frame_burst: int = 10
    forwarded_allow_ips: tuple[str, ...] = ()
    http_timeout: float = 15.0
    api_timeout: float = 2.0
    local_bus: bool = False
    metrics_token: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    redis_url: str = ""
    workers: int = 1
    subscribe_sync_timeout: float = 2.0
    history: Mapping[str, HistoryPolicy] = field(
        default_factory=lambda: parse_history(DEFAULT_HISTORY)
    )
    history_max_bytes: int = 64 * 1024 * 1024
    history_user_bytes: int = 1024 * 1024
    presence: frozenset[str] = frozenset({"chat"})
    presence_ttl: float = 15.0
    presence_debounce: float = 1.0
    webhook_url: str = ""
    webhook_secrets: tuple[str, ...] = ()
    webhook_publish: frozenset[str] = frozenset()
    webhook_timeout: float = 5.0
    webhook_batch: int = 100
    webhook_batch_bytes: int = 512 * 1024
    webhook_queue: int = 10_000
    webhook_claim_idle: float = 30.0
    webhook_retry_cap: float = 30.0
    trusted_issuers: tuple[TrustedIssuer, ...] = ()
    proxy: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """``WS_PROXY`` by namespace, then action (``subscribe``, ``publish``)."""
    proxy_secrets: tuple[str, ...] = ()
    proxy_timeout: float = 2.0
    proxy_max_in_flight: int = 64
    proxy_cache_ttl: float = 5.0
    public_url: str = ""
    """``WS_PUBLIC_URL``: the WebSocket URL clients connect to (a DPoP proof's ``htu``); empty
    is what this process serves, ``ws(s)://host:port/ws``."""
    dpop_required: bool = False
    """``WS_DPOP=required``: tokens that are not DPoP-bound are refused."""

    @cached_property
    def dpop(self) -> DpopRules:
        """What the ``auth`` frame's DPoP proofs must name (the public URL, normalized)."""
        scheme = "wss" if self.tls_cert else "ws"
        url = self.public_url or f"{scheme}://{self.host}:{self.port}/ws"
        return DpopRules(url=normalized_url(url) or "", required=self.dpop_required)

    @cached_property
    def namespaces(self) -> Namespaces:
        """Every namespace ``WS_HISTORY``, ``WS_PRESENCE``, ``WS_WEBHOOK_PUBLISH`` or ``WS_PROXY``
        names, resolved once."""
        names = sorted({*self.history, *self.presence, *self.webhook_publish, *self.proxy})
        return Namespaces(
            Namespace(
                name,
                history=self.history.get(name),
                presence=name in self.presence,
                webhook_publish=name in self.webhook_publish,
                subscribe_proxy=self.proxy.get(name, {}).get("subscribe"),
                publish_proxy=self.proxy.get(name, {}).get("publish"),
            )
            for name in names
        )

    @cached_property
    def limits(self) -> Limits:
        """What the domain enforces; the unauthenticated cap is the machine's, shared by the
        workers (the kernel spreads one address's sockets among them)."""
        return Limits(
            auth_timeout=self.auth_timeout,
            expiry_warning=self.expiry_warning,
            leeway=self.leeway,
            key_withdrawal_grace=self.key_withdrawal_grace,
            max_connections_per_user=self.max_connections_per_user,
            max_message_bytes=self.max_message_bytes,
            max_unauthenticated_per_address=math.ceil(
                self.max_unauthenticated_per_address / self.workers
            ),
            max_subscriptions=self.max_subscriptions,
            max_violations=self.max_violations,
            rate_per_second=self.rate_per_second,
            rate_burst=self.rate_burst,
            rate_strikes=self.rate_strikes,
            sync_timeout=self.subscribe_sync_timeout,
            reply_bytes=self.max_outbox_bytes // 4,
        )

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        return server_context(self.tls_cert, self.tls_key, prefix="WS")

    def __repr__(self) -> str:
        hidden = ("api_keys", "metrics_token", "webhook_secrets", "proxy_secrets")
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in hidden}
        shown["redis_url"] = redact_url(self.redis_url)
        return f"Settings(api_keys=***, webhook_secrets=***, proxy_secrets=***, {shown})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        # auth_service's issuer is never written with a trailing slash (auth_issuer): read the same
        # value the same way, or every token's iss would differ from it by one character.
        issuer = http_url(
            "WS_ISSUER", env_str(environ, "WS_ISSUER", auth_issuer(environ)).rstrip("/")
        )
        api_keys = split_list(env_secret(environ, "WS_API_KEYS"))
        if any(len(key) < 16 for key in api_keys):
            raise ConfigError("WS_API_KEYS entries must be at least 16 characters long")
        bearer_credentials("WS_API_KEYS entries", api_keys)
        bearer_credentials("WS_METRICS_TOKEN", [env_secret(environ, "WS_METRICS_TOKEN")])
        settings = cls(
            host=env_str(environ, "WS_HOST", "127.0.0.1"),
            port=env_int(environ, "WS_PORT", 8082, minimum=1, maximum=MAX_PORT),
            jwks_url=http_url(
                "WS_JWKS_URL",
                env_str(environ, "WS_JWKS_URL", f"{issuer}/.well-known/jwks.json"),
            ),
            issuer=issuer,
            audience=env_str(environ, "WS_AUDIENCE", "ws"),
            allowed_origins=env_origins(environ, "WS_ALLOWED_ORIGINS"),
            auth_timeout=env_float(
                environ, "WS_AUTH_TIMEOUT", 10.0, minimum=0.1, maximum=MAX_TIMEOUT
            ),
            expiry_warning=env_float(
                environ, "WS_EXPIRY_WARNING", 60.0, minimum=0, maximum=MAX_TIMEOUT
            ),
            key_withdrawal_grace=env_int(environ, "WS_KEY_WITHDRAWAL_GRACE", 10, minimum=1),
            leeway=env_int(environ, "WS_LEEWAY", 5, maximum=MAX_LEEWAY),
            # An auth frame may take what any frame may before auth (PREAUTH_MAX_BYTES): below
            # that, a DPoP-bound login or a renewal was closed 1009 ("stop") on its auth frame.
            max_message_bytes=env_int(
                environ, "WS_MAX_MESSAGE_BYTES", 65536, minimum=PREAUTH_MAX_BYTES
            ),
            api_keys=api_keys,
            heartbeat=env_float(environ, "WS_HEARTBEAT", 30.0, minimum=1, maximum=MAX_TIMEOUT),
            rate_per_second=env_float(environ, "WS_RATE_PER_SECOND", 20.0, minimum=0.1),
            rate_burst=env_int(environ, "WS_RATE_BURST", 40, minimum=1),
            max_subscriptions=env_int(environ, "WS_MAX_SUBSCRIPTIONS", 100, minimum=1),
            max_connections_per_user=env_int(environ, "WS_MAX_CONNECTIONS_PER_USER", 20, minimum=1),
            max_outbox_bytes=env_int(environ, "WS_MAX_OUTBOX_BYTES", 1_048_576, minimum=65_536),
            max_unauthenticated_per_address=env_int(
                environ, "WS_MAX_UNAUTHENTICATED_PER_ADDRESS", 32, minimum=1
            ),
            preauth_frame_rate=env_float(environ, "WS_PREAUTH_FRAME_RATE", 2.0, minimum=0.1),
            preauth_frame_burst=env_int(environ, "WS_PREAUTH_FRAME_BURST", 10, minimum=1),
            forwarded_allow_ips=trusted_proxies(
                env_list(environ, "WS_FORWARDED_ALLOW_IPS"), "WS_FORWARDED_ALLOW_IPS"
            ),
            http_timeout=env_float(
                environ, "WS_HTTP_TIMEOUT", 15.0, minimum=0.1, maximum=MAX_TIMEOUT
            ),
            api_timeout=env_float(
                environ, "WS_API_TIMEOUT", 2.0, minimum=0.05, maximum=MAX_TIMEOUT
            ),
            local_bus=env_bool(environ, "WS_LOCAL_BUS", False),
            metrics_token=env_secret(environ, "WS_METRICS_TOKEN"),
            jwks_min_ttl=env_float(environ, "WS_JWKS_MIN_TTL", 60.0, minimum=1),
            jwks_max_ttl=env_float(environ, "WS_JWKS_MAX_TTL", 3600.0, minimum=1),
            tls_cert=env_str(environ, "WS_TLS_CERT", ""),
            tls_key=env_str(environ, "WS_TLS_KEY", ""),
            redis_url=env_redis_url(environ),
            history=parse_history(env_str(environ, "WS_HISTORY", DEFAULT_HISTORY)),
            history_max_bytes=env_int(
                environ, "WS_HISTORY_MAX_BYTES", 64 * 1024 * 1024, minimum=65_536
            ),
            history_user_bytes=env_int(environ, "WS_HISTORY_USER_BYTES", 1024 * 1024, minimum=0),
            presence=_namespaces(env_str(environ, "WS_PRESENCE", "chat")),
            presence_ttl=env_float(
                environ, "WS_PRESENCE_TTL", 15.0, minimum=1, maximum=MAX_TIMEOUT
            ),
            presence_debounce=env_float(environ, "WS_PRESENCE_DEBOUNCE", 1.0, minimum=0),
            workers=env_int(environ, "WS_WORKERS", 1, minimum=1),
            **_webhook_settings(environ),
            trusted_issuers=parse_trusted_issuers(environ.get("WS_TRUSTED_ISSUERS", "")),
            proxy=parse_proxy(environ.get("WS_PROXY", "")),
            proxy_secrets=split_list(env_secret(environ, "WS_PROXY_SECRET")),
            proxy_timeout=env_float(
                environ, "WS_PROXY_TIMEOUT", 2.0, minimum=0.05, maximum=MAX_TIMEOUT
            ),
            proxy_max_in_flight=env_int(environ, "WS_PROXY_MAX_IN_FLIGHT", 64, minimum=1),
            proxy_cache_ttl=env_float(environ, "WS_PROXY_CACHE_TTL", 5.0, minimum=0),
            drain_seconds=env_float(
                environ, "WS_DRAIN_SECONDS", 30.0, minimum=0, maximum=MAX_TIMEOUT
            ),
            public_url=env_str(environ, "WS_PUBLIC_URL", ""),
            dpop_required=_dpop_required(env_str(environ, "WS_DPOP", "optional")),
        )
        if settings.public_url and normalized_url(settings.public_url) is None:
            raise ConfigError(
                f"WS_PUBLIC_URL must be a ws(s) or http(s) URL with a host, got "
                f"{settings.public_url!r}"
            )
        if settings.proxy and not settings.proxy_secrets:
            raise ConfigError(
                "WS_PROXY needs WS_PROXY_SECRET (or WS_PROXY_SECRET_FILE): the application "
                "verifies every call's Gateway-Signature with it"
            )
        if any(len(secret) < 16 for secret in settings.proxy_secrets):
            raise ConfigError("WS_PROXY_SECRET entries must be at least 16 characters long")
        if any(trusted.issuer == settings.issuer for trusted in settings.trusted_issuers):
            raise ConfigError("WS_TRUSTED_ISSUERS must not name WS_ISSUER (auth_service) again")
        _no_user_namespace("WS_PRESENCE", settings.presence)
        if settings.jwks_min_ttl > settings.jwks_max_ttl:
            raise ConfigError("WS_JWKS_MIN_TTL must not exceed WS_JWKS_MAX_TTL")
        if settings.workers > 1 and not settings.redis_url:
            raise ConfigError(
                "WS_WORKERS above 1 needs REDIS_URL: each worker is a process of its own, and "
                "only Redis carries revocations, channel messages and presence between them"
            )
        return settings


def _dpop_required(value: str) -> bool:
    """``WS_DPOP``: ``optional`` (bound tokens need proofs, bearer tokens still work) or
    ``required``. There is no ``off``: a bound token is never accepted without its proof."""
    policy = value.strip().lower()
    if policy not in ("optional", "required"):
        raise ConfigError(f"WS_DPOP must be optional or required, got {value!r}")
    return policy == "required"


def _webhook_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """``WS_WEBHOOK_*``: a URL needs a secret to sign with (``WS_WEBHOOK_SECRET``, or its
    ``_FILE``; a comma list while rotating, the first signing)."""
    url = env_str(environ, "WS_WEBHOOK_URL", "")
    secrets = split_list(env_secret(environ, "WS_WEBHOOK_SECRET"))
    publish = _namespaces(env_str(environ, "WS_WEBHOOK_PUBLISH", "none"))
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"WS_WEBHOOK_URL must be an http(s) URL, got {redact_url(url)!r}")
        if not secrets or any(len(secret) < 16 for secret in secrets):
            raise ConfigError(
                "WS_WEBHOOK_URL needs WS_WEBHOOK_SECRET (or WS_WEBHOOK_SECRET_FILE): secrets of "
                "16+ characters that sign every request, so the app can tell it is the gateway"
            )
    elif publish:
        raise ConfigError("WS_WEBHOOK_PUBLISH needs WS_WEBHOOK_URL")
    _no_user_namespace("WS_WEBHOOK_PUBLISH", publish)
    return {
        "webhook_url": url,
        "webhook_secrets": secrets,
        "webhook_publish": publish,
        "webhook_timeout": env_float(
            environ, "WS_WEBHOOK_TIMEOUT", 5.0, minimum=0.1, maximum=MAX_TIMEOUT
        ),
        "webhook_batch": env_int(
            environ, "WS_WEBHOOK_BATCH", 100, minimum=1, maximum=MAX_WEBHOOK_BATCH
        ),
        "webhook_batch_bytes": env_int(environ, "WS_WEBHOOK_BATCH_BYTES", 512 * 1024, minimum=1024),
        "webhook_queue": env_int(environ, "WS_WEBHOOK_QUEUE", 10_000, minimum=1),
        "webhook_claim_idle": env_float(
            environ, "WS_WEBHOOK_CLAIM_IDLE", 30.0, minimum=1, maximum=MAX_TIMEOUT
        ),
        "webhook_retry_cap": env_float(environ, "WS_WEBHOOK_RETRY_CAP", 30.0, minimum=0.1),
    }


def dev_api_key(data_dir: Path) -> str:
    """The publish API key of the embedded dev stack: created once in the data dir, then kept, so
    a backend script keeps working across restarts."""
    return kept_secret(data_dir / DEV_API_KEY_FILE)[0]
