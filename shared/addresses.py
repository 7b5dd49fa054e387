"""What a per-address limit counts a client address under, the same rule for both services."""

from __future__ import annotations

import ipaddress

__all__ = ["counted_as"]


def counted_as(address: str) -> str:
    """What attempts from ``address`` are counted under: an IPv6 address's /64 (an IPv4-mapped
    one as the IPv4 address it maps), anything else as it is. A /64 is the block one subscriber
    or host is given: its 2^64 addresses, counted apart, were as many fresh budgets."""
    if not address or ":" not in address:
        return address  # IPv4 (or not an address): as it is, without parsing it (per handshake)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return address
