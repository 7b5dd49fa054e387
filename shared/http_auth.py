"""``Authorization: Bearer`` parsing, the same for both services (RFC 6750: the scheme is
case-insensitive)."""

from __future__ import annotations

__all__ = ["bearer_token"]


def bearer_token(header: str | None) -> str | None:
    """The credentials of a Bearer ``Authorization`` header; None when absent or another scheme."""
    scheme, _, credentials = (header or "").partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        return None
    return credentials
