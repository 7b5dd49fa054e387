"""A URL's web origin (RFC 6454), serialized as a browser's ``Origin`` header spells it: what a
DPoP proof's ``htu`` is compared by (shared/dpop.py) and what an origin setting is read as
(shared/config/env.py)."""

from __future__ import annotations

from urllib.parse import SplitResult

from yarl import URL

__all__ = ["DEFAULT_PORTS", "web_origin"]

DEFAULT_PORTS = {"http": 80, "https": 443}


def web_origin(parts: SplitResult, scheme: str) -> str | None:
    """``scheme://host[:port]`` of ``parts`` under ``scheme`` (http or https): host in lower
    case and in ASCII (an international name as its ``xn--`` form), an IPv6 address in brackets,
    no default port. None when there is none: another scheme, no host, user info, a port out of
    range, a name no browser can spell in ASCII."""
    try:
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if scheme not in DEFAULT_PORTS or not host or parts.username is not None:
        return None
    if ":" in host:
        host = f"[{host}]"
    elif not host.isascii():
        # A browser's Origin names the host in ASCII (UTS 46 processing, as the WHATWG URL
        # standard has it, which yarl follows): https://bücher.example is sent as
        # https://xn--bcher-kva.example, so an origin kept as written never matched it.
        try:
            host = URL.build(scheme=scheme, host=host).raw_host or ""
        except ValueError:
            return None
        if not host:
            return None
    if port is not None and port != DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}"
