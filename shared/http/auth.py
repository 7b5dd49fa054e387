"""``Authorization: Bearer`` (and ``DPoP``, RFC 9449 section 7.1) parsing, the same for both
services (RFC 6750: the scheme is case-insensitive)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from multidict import CIMultiDictProxy

__all__ = ["access_token", "authorization", "bearer_matches", "bearer_token", "scheme_token"]


def authorization(headers: CIMultiDictProxy[str]) -> str | None:
    """The request's ``Authorization`` header. One request carries one credential (RFC 9110
    section 11.6.2): a repeated header is read as ``""``, which every caller refuses, where
    ``headers.get`` took the first and a proxy in front may have checked another."""
    values = headers.getall("Authorization", ())
    if len(values) == 1:
        return values[0]
    return "" if values else None


def bearer_token(header: str | None) -> str | None:
    """The credentials of a Bearer ``Authorization`` header; None when absent or another scheme."""
    return scheme_token(header, "bearer")


def access_token(header: str | None) -> tuple[str, bool] | None:
    """The access token of ``Authorization: Bearer``, or of ``Authorization: DPoP`` (then True:
    presented as DPoP-bound, RFC 9449 section 7.1); None for neither."""
    token = bearer_token(header)
    if token is not None:
        return token, False
    token = scheme_token(header, "dpop")
    return None if token is None else (token, True)


def scheme_token(header: str | None, scheme: str) -> str | None:
    """The credentials of an ``Authorization`` header of ``scheme`` (lower case); None when
    absent or another scheme.

    Credentials must be printable ASCII without spaces: aiohttp hands undecodable header bytes
    over as surrogate escapes, and those must never reach a parser, a hash or a log line.
    """
    given, _, credentials = (header or "").strip().partition(" ")
    credentials = credentials.strip()
    if given.lower() != scheme or not credentials:
        return None
    if not (credentials.isascii() and credentials.isprintable()) or " " in credentials:
        return None
    return credentials


def bearer_matches(header: str | None, secrets: Iterable[str]) -> bool:
    """Whether the header's Bearer credentials equal one of ``secrets``, compared in constant
    time (every secret is compared, so timing tells nothing about which one came close)."""
    token = bearer_token(header)
    if token is None:
        return False
    presented = token.encode()
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(presented, secret.encode())
    return matched
