"""The client's address behind a trusted proxy, the same rule for both services."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection

__all__ = ["client_address"]


def client_address(peer: str | None, forwarded_for: str | None, trusted: Collection[str]) -> str:
    """``peer``, or the last ``X-Forwarded-For`` hop when ``peer`` is a trusted proxy (``*``
    trusts every peer). The last hop is the one the proxy itself appended; a hop that is not an IP
    address (garbage, or undecodable bytes handed over as surrogate escapes) is not used, so it
    never becomes a throttle key, a database value or a log field."""
    address = peer or "unknown"
    if address not in trusted and "*" not in trusted:
        return address
    hops = [hop.strip() for hop in (forwarded_for or "").split(",") if hop.strip()]
    if not hops:
        return address
    try:
        return str(ipaddress.ip_address(hops[-1]))
    except ValueError:
        return address
