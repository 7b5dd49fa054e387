"""Server-side TLS from a certificate chain and key on disk (both services use it)."""

from __future__ import annotations

import ssl

from shared.config.env import ConfigError

__all__ = ["server_context"]


def server_context(cert: str, key: str, *, prefix: str) -> ssl.SSLContext | None:
    """A TLS 1.2+ context, or None when neither path is set; exactly one set is an error."""
    if not cert and not key:
        return None
    if not (cert and key):
        raise ConfigError(f"set both {prefix}_TLS_CERT and {prefix}_TLS_KEY, or neither")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load {prefix}_TLS_CERT/{prefix}_TLS_KEY: {exc}") from exc
    return context
