"""Typed reads of environment variables with errors that name the variable."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "ConfigError",
    "auth_issuer",
    "env_bool",
    "env_float",
    "env_int",
    "env_list",
    "env_str",
    "redact_url",
]


class ConfigError(ValueError):
    """A setting is missing or malformed; start-up stops with this message."""


def env_str(environ: Mapping[str, str], name: str, default: str) -> str:
    value = environ.get(name, "").strip()
    return value or default


def env_int(environ: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(
    environ: Mapping[str, str], name: str, default: float, *, minimum: float = 0
) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be 0 or 1, got {raw!r}")


def env_list(
    environ: Mapping[str, str], name: str, default: tuple[str, ...] = ()
) -> tuple[str, ...]:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def redact_url(url: str) -> str:
    """A connection URL without its credentials, for logs and reprs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


def auth_issuer(environ: Mapping[str, str]) -> str:
    """``AUTH_ISSUER``, else ``http(s)://AUTH_HOST:AUTH_PORT``; never with a trailing slash."""
    host = env_str(environ, "AUTH_HOST", "127.0.0.1")
    port = env_int(environ, "AUTH_PORT", 8081, minimum=0)
    scheme = "https" if environ.get("AUTH_TLS_CERT", "").strip() else "http"
    return env_str(environ, "AUTH_ISSUER", f"{scheme}://{host}:{port}").rstrip("/")
