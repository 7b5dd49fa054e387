"""The verifier's key source over one issuer's key-set cache (``shared/http/jwks.py``): the
cache's errors become the gateway's, so the domain sees only its own exception tree."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from shared.http import jwks
from ws_service.domain.errors import AuthError, InvalidToken, KeysUnavailable, KeyWithdrawn

__all__ = ["IssuerKeys"]

_ERRORS: dict[type[jwks.JwksError], type[AuthError]] = {
    jwks.KeyWithdrawn: KeyWithdrawn,
    jwks.UnknownKey: InvalidToken,
    jwks.KeysUnavailable: KeysUnavailable,
}


@contextmanager
def _as_gateway_errors() -> Iterator[None]:
    try:
        yield
    except jwks.JwksError as exc:
        raise _ERRORS[type(exc)](str(exc) or None) from None


class IssuerKeys:
    """Implements the domain's ``KeySource`` for one issuer."""

    __slots__ = ("cache",)

    def __init__(self, cache: jwks.JwksCache) -> None:
        self.cache = cache

    async def get_key(self, kid: str) -> jwks.VerifyingKey:
        with _as_gateway_errors():
            return await self.cache.get_key(kid)

    def is_withdrawn(self, kid: str) -> bool:
        return self.cache.is_withdrawn(kid)

    def withdraw(self, kid: str) -> None:
        self.cache.withdraw(kid)

    async def refresh(self) -> None:
        with _as_gateway_errors():
            await self.cache.refresh()

    def fetched_since(self, when: float) -> bool:
        return self.cache.fetched_since(when)
