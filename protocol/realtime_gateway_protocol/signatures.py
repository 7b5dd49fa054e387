"""``Gateway-Signature``: how the gateway signs every request it makes to the app's backend (the
subscribe and publish proxies, the webhooks), and how the backend checks one.

The header is ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``, the scheme Stripe and
Slack document for theirs: the timestamp is signed with the body, so a captured request cannot be
replayed outside the tolerance window, and comparing in constant time leaks nothing. While a
secret is being rotated the gateway may send several ``v1=`` values (one per secret); a receiver
accepts the request when any matches one of its secrets. Standard library only: an app backend in
Python can import this module to verify.

    from realtime_gateway_protocol.signatures import verify
    if not verify(request.headers.get("Gateway-Signature"), raw_body, [secret]):
        return 401
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable

__all__ = ["HEADER", "TOLERANCE", "sign", "verify"]

HEADER = "Gateway-Signature"
TOLERANCE = 300
"""Seconds a signature's timestamp may differ from the receiver's clock."""


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(body: bytes, secrets: Iterable[str], now: float | None = None) -> str:
    """The header value for ``body``: one ``v1=`` per secret (the first is the current one)."""
    timestamp = int(time.time() if now is None else now)
    parts = [f"t={timestamp}"] + [f"v1={_digest(s, timestamp, body)}" for s in secrets]
    if len(parts) < 2:
        raise ValueError("signing needs at least one secret")
    return ",".join(parts)


def verify(
    header: str | None,
    body: bytes,
    secrets: Iterable[str],
    *,
    now: float | None = None,
    tolerance: float = TOLERANCE,
) -> bool:
    """Whether ``header`` signs ``body`` with one of ``secrets`` within ``tolerance`` seconds."""
    if not header or len(header) > 4096:
        return False
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif key == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    matched = False
    for secret in secrets:
        expected = _digest(secret, timestamp, body)
        for candidate in signatures:
            matched |= hmac.compare_digest(expected.encode(), candidate.encode("ascii", "replace"))
    return matched
