"""The auth_service issuer URL, derived the same way by both services.

ws_service checks ``iss`` for exact equality, so the two services must agree on the default to
the character (scheme, no trailing slash).
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.envparse import env_int, env_str

__all__ = ["auth_issuer"]


def auth_issuer(environ: Mapping[str, str]) -> str:
    """``AUTH_ISSUER``, else ``http(s)://AUTH_HOST:AUTH_PORT``; never with a trailing slash."""
    host = env_str(environ, "AUTH_HOST", "127.0.0.1")
    port = env_int(environ, "AUTH_PORT", 8081, minimum=0)
    scheme = "https" if environ.get("AUTH_TLS_CERT", "").strip() else "http"
    return env_str(environ, "AUTH_ISSUER", f"{scheme}://{host}:{port}").rstrip("/")
