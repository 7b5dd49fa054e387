"""The client's address behind a trusted proxy, the same rule for both services."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable
from functools import lru_cache

from multidict import MultiMapping

from shared.config.env import ConfigError

__all__ = ["client_address", "forwarded_for", "trusted_proxies"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_proxies(entries: Iterable[str], variable: str) -> tuple[str, ...]:
    """``entries`` once each is ``*``, an IP address or a network (``10.0.0.0/8``): anything else
    stops start-up, since a host name or a typo would never match, and every client would then
    share the proxy's address (one client's failures blocking everyone)."""
    checked = tuple(entries)
    for entry in checked:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"{variable} lists IP addresses or networks (CIDR) or *, not {entry[:60]!r}"
            ) from None
    return checked


@lru_cache(maxsize=16)
def _networks(trusted: tuple[str, ...]) -> tuple[_Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted if entry != "*")


def _is_trusted(peer: str, trusted: Collection[str]) -> bool:
    if "*" in trusted:
        return True
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack listener sees an IPv4 proxy as ::ffff:a.b.c.d
    try:
        networks = _networks(tuple(trusted))
    except ValueError:  # settings made in code, not read through trusted_proxies
        return False
    return any(ip in network for network in networks)


def forwarded_for(headers: MultiMapping[str]) -> str | None:
    """Every ``X-Forwarded-For`` line of a request as one list, in order (RFC 9110 section 5.3: a
    field sent in several lines is their values joined with commas). A proxy that adds its own
    line after the client's (HAProxy's ``option forwardfor``) appends the hop it saw as the last
    line; reading the first line alone took the client's own header for the address."""
    lines = headers.getall("X-Forwarded-For", ())
    return ", ".join(lines) if lines else None


def client_address(peer: str | None, forwarded_for: str | None, trusted: Collection[str]) -> str:
    """``peer``, or the last ``X-Forwarded-For`` hop when ``peer`` is a trusted proxy (an address
    or network of ``trusted``; ``*`` trusts every peer). The last hop is the one the proxy itself
    appended (with a port or without); a hop that is not an IP address (garbage, or undecodable
    bytes handed over as surrogate escapes) is not used, so it never becomes a throttle key, a
    database value or a log field."""
    address = peer or "unknown"
    if not trusted or not _is_trusted(address, trusted):
        return address
    hops = [hop.strip() for hop in (forwarded_for or "").split(",") if hop.strip()]
    if not hops:
        return address
    hop = _without_port(hops[-1])
    try:
        return str(ipaddress.ip_address(hop))
    except ValueError:
        return address


def _without_port(hop: str) -> str:
    """The address of a hop that a proxy wrote with its port (Azure Application Gateway, IIS
    ARR: ``203.0.113.9:5555``, ``[2001:db8::1]:443``): refused whole, every client behind such a
    proxy counted as the proxy, and one client's failed logins blocked them all. An IPv6 address
    is only unbracketed (``2001:db8::1:443`` is an address, not one with a port)."""
    if hop.startswith("["):
        inside, bracket, port = hop[1:].partition("]")
        if bracket and ":" in inside and (not port or (port[0] == ":" and _is_port(port[1:]))):
            return inside
        return hop
    host, colon, port = hop.partition(":")
    if colon and "." in host and _is_port(port):
        return host
    return hop


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5 and int(text) <= 65535
