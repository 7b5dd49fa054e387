"""DPoP over HTTP (RFC 9449): a request's proof, the ``DPoP`` challenge, the nonce header."""

from __future__ import annotations

from aiohttp import web

from shared.dpop import ALGORITHMS, Presented, normalized_url

__all__ = ["DPOP_HEADER", "NONCE_HEADER", "challenge", "request_proof"]

DPOP_HEADER = "DPoP"
NONCE_HEADER = "DPoP-Nonce"


def request_proof(request: web.Request, base_url: str) -> Presented | None:
    """The request's ``DPoP`` header, to be proven for its method and its URL under the public
    ``base_url`` (the URL clients use, a proxy's prefix included: the issuer), without query or
    fragment. None without the header."""
    values = request.headers.getall(DPOP_HEADER, ())
    if not values:
        return None
    url = normalized_url(base_url.rstrip("/") + request.rel_url.raw_path) or ""
    return Presented(",".join(values), request.method, url)


def challenge(error: str | None = None) -> str:
    """``WWW-Authenticate: DPoP`` (RFC 9449 section 7.1), with the algorithms proofs may use."""
    algs = f'algs="{" ".join(ALGORITHMS)}"'
    return f'DPoP error="{error}", {algs}' if error else f"DPoP {algs}"
