"""Typed reads of environment variables with errors that name the variable."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from shared.urls import web_origin

__all__ = [
    "MAX_PORT",
    "ConfigError",
    "auth_issuer",
    "env_bool",
    "env_float",
    "env_int",
    "env_list",
    "env_log_level",
    "env_origins",
    "env_secret",
    "env_secret_url",
    "env_str",
    "http_url",
    "redact_url",
    "split_list",
]


class ConfigError(ValueError):
    """A setting is missing or malformed; start-up stops with this message."""


def env_str(environ: Mapping[str, str], name: str, default: str) -> str:
    value = environ.get(name, "").strip()
    return value or default


def env_int(
    environ: Mapping[str, str],
    name: str,
    default: int,
    *,
    minimum: int = 0,
    maximum: int | None = None,
) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {value}")
    return value


MAX_PORT = 65535
MAX_ACCESS_TOKEN_TTL = 86_400
"""A day: an access token is the short-lived credential (the refresh token renews it)."""
MAX_LIFETIME = 315_360_000
"""Ten years, for refresh tokens and sessions: beyond any product's need, and well within the
integers a browser reads exactly (2^53)."""


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def env_log_level(environ: Mapping[str, str], name: str) -> str:
    """A log level by name (INFO unless set); any other word was a plain-text traceback."""
    level = env_str(environ, name, "INFO").upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{name} must be one of {', '.join(LOG_LEVELS)}, got {environ[name]!r}")
    return level


def env_float(
    environ: Mapping[str, str],
    name: str,
    default: float,
    *,
    minimum: float = 0,
    maximum: float | None = None,
) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        # float() takes "nan" and "inf": a NaN timeout closed every socket at once, an infinite
        # one turned the slow-client protection off.
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum:g}, got {value:g}")
    return value


MAX_TIMEOUT = 600.0
"""Seconds: the most a read, request or heartbeat may be given. A timeout of 1e300 is accepted
by float() and is no timeout at all: the protection it stands for would be off."""


def env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be 0 or 1, got {raw!r}")


def split_list(raw: str) -> tuple[str, ...]:
    """Items separated by commas or line breaks (a secret file may hold one per line)."""
    return tuple(item.strip() for item in re.split(r"[,\r\n]", raw) if item.strip())


def env_list(
    environ: Mapping[str, str], name: str, default: tuple[str, ...] = ()
) -> tuple[str, ...]:
    return split_list(environ.get(name, "")) or default


def env_origins(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A list of web origins (RFC 6454: ``scheme://host[:port]``), as a browser's ``Origin``
    header spells them: scheme and host in lower case, no default port, no trailing slash. A
    wildcard, a path or anything else that no ``Origin`` header can equal stops start-up: ``*``
    became a credentialed wildcard (every origin reflected), a trailing slash refused the very
    page it named (an outside probe)."""
    origins = []
    for raw in env_list(environ, name):
        try:
            parts = urlsplit(raw)
        except ValueError:
            parts = urlsplit("")
        origin = web_origin(parts, parts.scheme)
        if origin is None or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(
                f"{name}: {raw!r} is not an origin: scheme://host[:port] (http or https), "
                "no path, never a wildcard"
            )
        origins.append(origin)
    return tuple(origins)


def env_secret(environ: Mapping[str, str], name: str) -> str:
    """``NAME``, or the contents of the file that ``NAME_FILE`` names; "" when neither is set.

    ``NAME_FILE=/run/secrets/...`` is how Docker and Kubernetes hand out secrets (the convention of
    the official PostgreSQL and Redis images): a file is not inherited by child processes, listed by
    ``docker inspect`` or shown in ``/proc/*/environ``. Its trailing line break is dropped. Both set,
    or a file that is missing, unreadable or empty, stops start-up: a secret silently absent would
    start the service without it. Messages name the variable and the path, never the value.
    """
    value = environ.get(name, "").strip()
    path = environ.get(f"{name}_FILE", "").strip()
    if not path:
        return value
    if value:
        raise ConfigError(f"{name} and {name}_FILE are both set: set one of them")
    try:
        secret = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"{name}_FILE={path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name}_FILE={path} is not UTF-8 text") from None
    if not secret.strip():
        raise ConfigError(f"{name}_FILE={path} is empty")
    return secret


def env_secret_url(
    environ: Mapping[str, str],
    name: str,
    password_name: str,
    default: str = "",
    *,
    schemes: tuple[str, ...] = (),
) -> str:
    """The URL in ``name`` (or ``name_FILE``) with the password of ``password_name`` (or
    ``password_name_FILE``) put in, so the URL itself can sit in plain configuration.

    The password is percent-encoded; the drivers (asyncpg, redis-py) decode it. With
    ``schemes``, a URL of any other scheme is refused before a password goes into it: a typo
    (``postgress://``) is an error naming the variable, not a URL nothing reads correctly, and
    never a message or file name holding the password.
    """
    url = env_secret(environ, name) or default
    scheme, sep, _ = url.partition("://")
    if schemes and sep and scheme not in schemes:
        allowed = " or ".join(f"{s}://" for s in schemes)
        raise ConfigError(f"{name} must start with {allowed}, not {scheme[:32]!r}://")
    if sep and not scheme.startswith("sqlite"):
        check_host_and_port(name, url)
    password = env_secret(environ, password_name)
    if not password:
        return url
    parts = urlsplit(url)
    if not parts.hostname:
        raise ConfigError(f"{password_name} is set but {name} names no server to send it to")
    if parts.password is not None:
        raise ConfigError(f"{name} already holds a password: remove it, or unset {password_name}")
    user, _, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}").geturl()


_SECRET_OPTION = re.compile(
    r"([?&][^=&#]*(?:pass|pwd|secret|token|key|sig|auth|credential|code)[^=&#]*=)[^&#]*",
    re.IGNORECASE,
)
"""A query option holding a secret: redis-py and libpq read ``?password=``, a Sentinel group's
URL carries ``sentinel_password``, and an application's proxy URL may carry ``?api_key=``, or
an Azure Functions key as ``?code=`` (an outside probe: the proxy's failure line logged it)."""
_HIDDEN = r"\1***"


def check_host_and_port(name: str, url: str) -> None:
    """Stop start-up on a URL whose server part cannot be read (``host:abc``, ``[::1:5432``, a
    port past 65535): the driver raised deep in start-up, a traceback and not the one line naming
    the variable (an outside probe). A comma list of hosts (a Sentinel group) is checked by its
    own parser."""
    try:
        parts = urlsplit(url)
        if "," not in parts.netloc:
            parts.port  # noqa: B018 -- reading it is the check
    except ValueError as exc:
        shown = redact_url(url)
        raise ConfigError(f"{name} has an unreadable host or port ({exc}): {shown!r}") from None


def bearer_credentials(name: str, values: Iterable[str]) -> None:
    """Refuse a key or token no request can present: an ``Authorization: Bearer`` credential is
    printable ASCII without spaces (``shared/http/auth.py`` refuses anything else), so one with a
    space or a non-ASCII character started the service and then answered 401 to every call (an
    outside probe)."""
    for value in values:
        if value and not (value.isascii() and value.isprintable() and " " not in value):
            raise ConfigError(
                f"{name} must be printable ASCII without spaces (an Authorization: Bearer "
                "credential cannot carry anything else)"
            )


def redact_url(url: str) -> str:
    """A connection URL without its credentials (user info, and any ``*password*`` query
    option), for logs and reprs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    if "@" in rest:
        rest = f"***@{rest.rsplit('@', 1)[1]}"
    return f"{scheme}://{_SECRET_OPTION.sub(_HIDDEN, rest)}"


def auth_issuer(environ: Mapping[str, str]) -> str:
    """``AUTH_ISSUER``, else ``http(s)://AUTH_HOST:AUTH_PORT``; never with a trailing slash."""
    host = env_str(environ, "AUTH_HOST", "127.0.0.1")
    port = env_int(environ, "AUTH_PORT", 8081, minimum=0, maximum=MAX_PORT)
    scheme = "https" if environ.get("AUTH_TLS_CERT", "").strip() else "http"
    issuer = env_str(environ, "AUTH_ISSUER", f"{scheme}://{host}:{port}").rstrip("/")
    return http_url("AUTH_ISSUER", issuer)


def http_url(name: str, url: str) -> str:
    """``url`` when it is an absolute http(s) URL with a host and neither query nor fragment;
    else the setting stops start-up. ``chat.example.com/auth`` (no scheme) was taken as an
    issuer no token could match, and a JWKS URL without one left ws_service unready for good,
    its log naming the URL alone (an outside probe)."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (parsing it is the check)
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(
            f"{name} must be an absolute http:// or https:// URL with a host and no query, "
            f"got {url[:120]!r}"
        )
    # Scheme and host in lower case (RFC 3986 section 6.2.2.1), as a browser's Origin spells
    # them: an issuer written HTTPS://Chat.Example.com made cookies without Secure and refused
    # the page's own origin (an outside probe). The user information and path keep their case.
    userinfo, at, host = parts.netloc.rpartition("@")
    return urlunsplit((parts.scheme, f"{userinfo}{at}{host.lower()}", parts.path, "", ""))
