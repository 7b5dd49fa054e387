"""The trusted identity providers' key sets: the domain's ``IssuerKeys`` over one
``shared/http/jwks.py`` cache per provider.

A cache is made the first time a client's exchange needs its provider, and kept fresh by its own
refresh task from then on (at its key set's ``Cache-Control`` TTL, within 1 minute and 1 hour).
There is one per provider (its ``iss`` and ``jwks_uri``), whichever clients trust it: it holds the
provider's asymmetric keys, each with the algorithms it may verify, and each client's exchange
then allows only its own pinned ones. Each cache fetches from its own provider's ``jwks_uri`` only,
so an unknown ``kid`` presented for one provider never makes another's fetch. At most :data:`MAX_PROVIDERS` are kept: beyond that the one
used least recently is closed (clients are registered by an operator, so this bound is about a
provider whose registration changed, not about anything a request can make).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

import aiohttp

from auth_service.domain.errors import InvalidGrant, IssuerUnavailable
from auth_service.domain.models import TrustedIssuer
from realtime_gateway_protocol.tasks import cancel_and_wait
from shared.http import jwks

__all__ = ["MAX_PROVIDERS", "Provider", "ProviderKeys"]

MAX_PROVIDERS = 64
Provider = tuple[str, str]
"""A provider's ``iss`` and ``jwks_uri``: what names its one cache."""


class ProviderKeys:
    """Implements the domain's ``IssuerKeys``; ``close()`` stops every cache's refresh."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        max_providers: int = MAX_PROVIDERS,
        refetch_interval: float = 10.0,
        on_fetch: Callable[[str, str], None] | None = None,
    ) -> None:
        self._session = session
        self._max = max_providers
        self._refetch_interval = refetch_interval
        self._on_fetch = on_fetch or (lambda issuer, outcome: None)
        self._caches: OrderedDict[Provider, tuple[jwks.JwksCache, asyncio.Task[None]]] = (
            OrderedDict()
        )
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def providers(self) -> list[Provider]:
        """``(iss, jwks_uri)`` of the providers with a cache, least recently used first."""
        return list(self._caches)

    async def get_key(self, issuer: TrustedIssuer, kid: str) -> jwks.VerifyingKey:
        cache = self._cache_of(issuer)
        try:
            return await cache.get_key(kid)
        except jwks.KeysUnavailable:
            raise IssuerUnavailable(
                f"the keys of {issuer.issuer} cannot be fetched now; try again"
            ) from None
        except jwks.JwksError:
            raise InvalidGrant("the subject token's kid is not in its issuer's key set") from None

    async def close(self) -> None:
        while self._caches:
            self._evict()
        await asyncio.gather(*self._closing)

    def _cache_of(self, issuer: TrustedIssuer) -> jwks.JwksCache:
        provider = (issuer.issuer, issuer.jwks_uri)
        entry = self._caches.get(provider)
        if entry is not None:
            self._caches.move_to_end(provider)
            return entry[0]
        cache = jwks.JwksCache(
            self._session,
            issuer.jwks_uri,
            algorithms=jwks.ALGORITHMS,
            refetch_interval=self._refetch_interval,
            on_fetch=lambda outcome: self._on_fetch(issuer.issuer, outcome),
        )
        self._caches[provider] = (cache, asyncio.get_running_loop().create_task(cache.run()))
        while len(self._caches) > self._max:
            self._evict()
        return cache

    def _evict(self) -> None:
        _, (cache, refresher) = self._caches.popitem(last=False)
        closing = asyncio.get_running_loop().create_task(_closed(cache, refresher))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)


async def _closed(cache: jwks.JwksCache, refresher: asyncio.Task[None]) -> None:
    await cancel_and_wait(refresher)
    await cache.close()
