"""auth_service configuration, read once from the environment at start-up."""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from auth_service.domain.dpop import DpopPolicy
from shared.config.env import (
    MAX_ACCESS_TOKEN_TTL,
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
    env_secret_url,
    env_str,
    redact_url,
    split_list,
)
from shared.config.kept_secret import kept_secret
from shared.config.tls import server_context
from shared.http.forwarded import trusted_proxies
from shared.redis.connect import env_redis_url

__all__ = ["SECRET_FILE", "ConfigError", "Settings", "checkout_secret"]

log = logging.getLogger(__name__)

SECRET_FILE = "key-encryption-secret"  # noqa: S105 (a file name)
"""The one secret file of a checkout: `make run` (AUTH_DEV=1), the commands beside it, and
`python -m auth_service secret` for the PostgreSQL path all use it, so they open the same keys."""
_OLD_DEV_SECRET_FILE = "dev-key-encryption-secret"  # noqa: S105 (a file name)
SECRETS_VARIABLE = "AUTH_KEY_ENCRYPTION_SECRETS"
_PLACEHOLDERS = {"changeme", "change-me", "secret", "password", "dev", "test", "example"}
MIN_SECRET_LENGTH = 16
DATABASE_SCHEMES = ("postgresql", "postgres", "sqlite")
"""What AUTH_DATABASE_URL may name; a bare path is a SQLite file too."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8081
    issuer: str = "http://127.0.0.1:8081"
    audience: str = "ws"
    database_url: str = "sqlite:///.data/auth.db"
    data_dir: Path = Path(".data")
    access_token_ttl: int = 300
    refresh_token_ttl: int = 1_209_600
    session_lifetime: int = 2_592_000
    refresh_reuse_grace: int = 10
    key_encryption_secrets: tuple[str, ...] = field(default=(), repr=False)
    secrets_source: str = SECRETS_VARIABLE
    """Where the secrets came from (a variable or a file), for the banner and error messages."""
    jwks_max_age: int = 300
    key_rotation_interval: int = 86_400
    default_scope: str = "chat:read chat:write"
    allow_registration: bool = True
    dev: bool = False
    forwarded_allow_ips: tuple[str, ...] = ()
    redis_url: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    cors_origins: tuple[str, ...] = ()
    client_id: str = "realtime-gateway"
    http_timeout: float = 15.0
    database_timeout: float = 5.0
    """Seconds one database call may take, waiting for a connection included: past it the
    request is 503 ``temporarily_unavailable`` instead of hanging on a stalled database."""
    metrics_token: str = field(default="", repr=False)
    workers: int = 1
    dpop: DpopPolicy = DpopPolicy.OPTIONAL
    """``AUTH_DPOP``: whether tokens are bound to the client's DPoP key (RFC 9449)."""
    dpop_nonce: bool = False
    """``AUTH_DPOP_NONCE``: proofs must carry a server nonce (RFC 9449 section 8)."""

    def __post_init__(self) -> None:
        if not self.key_encryption_secrets:
            raise ConfigError(
                "AUTH_KEY_ENCRYPTION_SECRETS is required (a comma list of long random secrets; "
                "the first encrypts, all decrypt): set the one the signing keys were stored with, "
                "or create one kept in the data dir with `export AUTH_KEY_ENCRYPTION_SECRETS="
                "$(python -m auth_service secret)`. For local development set AUTH_DEV=1."
            )
        for secret in self.key_encryption_secrets:
            if len(secret) < MIN_SECRET_LENGTH or secret.lower() in _PLACEHOLDERS:
                raise ConfigError(
                    "AUTH_KEY_ENCRYPTION_SECRETS holds a placeholder or a secret shorter than "
                    f"{MIN_SECRET_LENGTH} characters; create a kept one with "
                    "`python -m auth_service secret`"
                )
        if self.key_rotation_interval <= self.jwks_max_age:
            raise ConfigError("AUTH_KEY_ROTATION_INTERVAL must be longer than AUTH_JWKS_MAX_AGE")
        if self.workers > 1 and (
            not self.database_url.startswith(("postgresql://", "postgres://")) or not self.redis_url
        ):
            raise ConfigError(
                "AUTH_WORKERS above 1 needs PostgreSQL (AUTH_DATABASE_URL) and REDIS_URL: each "
                "worker is a process of its own, and only Redis carries key announcements and "
                "revocations between them"
            )
        if self.workers > 1 and self.port == 0:
            raise ConfigError("AUTH_WORKERS above 1 needs a fixed AUTH_PORT for them to share")

    def __repr__(self) -> str:
        return f"Settings(issuer={self.issuer!r}, database={redact_url(self.database_url)!r}, secrets=***)"

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        return server_context(self.tls_cert, self.tls_key, prefix="AUTH")

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/.well-known/jwks.json"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] = os.environ, *, use_checkout_dev_secret: bool = False
    ) -> Settings:
        """``use_checkout_dev_secret``: the management commands, run beside ``make run``, use the
        secret its data dir already holds (never creating one) when nothing else is set."""
        host = env_str(environ, "AUTH_HOST", "127.0.0.1")
        port = env_int(environ, "AUTH_PORT", 8081, minimum=0, maximum=MAX_PORT)
        data_dir = Path(env_str(environ, "AUTH_DATA_DIR", ".data"))
        dev = env_bool(environ, "AUTH_DEV", False)
        secrets_ = split_list(env_secret(environ, SECRETS_VARIABLE))
        source = secrets_source(environ)
        database_url = env_secret_url(
            environ, "AUTH_DATABASE_URL", "AUTH_DATABASE_PASSWORD", schemes=DATABASE_SCHEMES
        )
        if database_url.startswith("sqlite:") and not database_url.startswith("sqlite:///"):
            raise ConfigError("AUTH_DATABASE_URL: a SQLite URL is sqlite:///<path> (three slashes)")
        embedded_db = not database_url
        if not secrets_ and (
            dev or (use_checkout_dev_secret and embedded_db and checkout_secret_path(data_dir))
        ):
            secrets_ = (dev_secret(data_dir),)
            source = f"{data_dir / SECRET_FILE}{' (AUTH_DEV=1)' if dev else ''}"
        metrics_token = env_secret(environ, "AUTH_METRICS_TOKEN")
        bearer_credentials("AUTH_METRICS_TOKEN", [metrics_token])
        return cls(
            host=host,
            port=port,
            issuer=auth_issuer(environ),
            audience=env_str(environ, "AUTH_AUDIENCE", "ws"),
            database_url=database_url or f"sqlite:///{(data_dir / 'auth.db').as_posix()}",
            data_dir=data_dir,
            access_token_ttl=env_int(
                environ, "AUTH_ACCESS_TOKEN_TTL", 300, minimum=1, maximum=MAX_ACCESS_TOKEN_TTL
            ),
            refresh_token_ttl=env_int(
                environ, "AUTH_REFRESH_TOKEN_TTL", 1_209_600, minimum=1, maximum=MAX_LIFETIME
            ),
            session_lifetime=env_int(
                environ, "AUTH_SESSION_LIFETIME", 2_592_000, minimum=1, maximum=MAX_LIFETIME
            ),
            refresh_reuse_grace=env_int(environ, "AUTH_REFRESH_REUSE_GRACE", 10),
            key_encryption_secrets=secrets_,
            secrets_source=source,
            jwks_max_age=env_int(environ, "AUTH_JWKS_MAX_AGE", 300),
            key_rotation_interval=env_int(environ, "AUTH_KEY_ROTATION_INTERVAL", 86_400, minimum=1),
            default_scope=env_str(environ, "AUTH_DEFAULT_SCOPE", "chat:read chat:write"),
            allow_registration=env_bool(environ, "AUTH_ALLOW_REGISTRATION", True),
            dev=dev,
            forwarded_allow_ips=trusted_proxies(
                env_list(environ, "AUTH_FORWARDED_ALLOW_IPS"), "AUTH_FORWARDED_ALLOW_IPS"
            ),
            redis_url=env_redis_url(environ),
            tls_cert=env_str(environ, "AUTH_TLS_CERT", ""),
            tls_key=env_str(environ, "AUTH_TLS_KEY", ""),
            cors_origins=env_origins(environ, "AUTH_CORS_ORIGINS"),
            client_id=env_str(environ, "AUTH_CLIENT_ID", "realtime-gateway"),
            http_timeout=env_float(
                environ, "AUTH_HTTP_TIMEOUT", 15.0, minimum=0.1, maximum=MAX_TIMEOUT
            ),
            database_timeout=env_float(
                environ, "AUTH_DATABASE_TIMEOUT", 5.0, minimum=0.1, maximum=MAX_TIMEOUT
            ),
            metrics_token=metrics_token,
            workers=env_int(environ, "AUTH_WORKERS", 1, minimum=1),
            dpop=_dpop_policy(env_str(environ, "AUTH_DPOP", "optional")),
            dpop_nonce=env_bool(environ, "AUTH_DPOP_NONCE", False),
        )


def _dpop_policy(value: str) -> DpopPolicy:
    try:
        return DpopPolicy.parse(value, "AUTH_DPOP")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def secrets_source(environ: Mapping[str, str]) -> str:
    file = environ.get(f"{SECRETS_VARIABLE}_FILE", "").strip()
    return f"{SECRETS_VARIABLE}_FILE={file}" if file else SECRETS_VARIABLE


def checkout_secret_path(data_dir: Path) -> Path | None:
    """The secret file kept in the data dir, when there is one. A checkout's older
    ``dev-key-encryption-secret`` (what `make run` kept before both paths shared one file) is
    renamed to it, so the keys its database holds stay readable."""
    path, old = data_dir / SECRET_FILE, data_dir / _OLD_DEV_SECRET_FILE
    if old.exists() and not path.exists():
        old.rename(path)
    return path if path.exists() else None


def checkout_secret(data_dir: Path) -> tuple[str, bool]:
    """The secret kept in ``data_dir/key-encryption-secret``, created once; True if just made."""
    checkout_secret_path(data_dir)
    return kept_secret(data_dir / SECRET_FILE)


def dev_secret(data_dir: Path) -> str:
    """AUTH_DEV=1's secret: the checkout's, with a loud warning the first time it is made."""
    secret, created = checkout_secret(data_dir)
    if created:
        log.warning(
            "AUTH_DEV=1: created the key-encryption secret kept in the data dir; never use dev "
            "mode in production",
            extra={"path": str(data_dir / SECRET_FILE)},
        )
    return secret
