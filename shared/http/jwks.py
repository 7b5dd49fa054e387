"""An async JWKS cache over aiohttp: the keys of one issuer.

pyjwt's ``PyJWKClient`` blocks the event loop and forgets its keys when a fetch fails; this cache
fetches one at a time, keeps the last good key set while the issuer is down, and turns a flood of
unknown ``kid``s into at most one refetch per ``refetch_interval``. A fetch follows no redirect,
takes no compressed answer and reads at most ``MAX_JWKS_BYTES``: an issuer's server (another
tenant's identity provider, for auth_service) can neither move the keys elsewhere nor make this
process hold more than a key set. One instance serves one issuer,
so an unknown ``kid`` of one issuer never triggers a fetch from another.

Each key comes with the algorithms it may verify, pinned by the issuer's configuration: the JWK's
``alg`` when it states one, else every configured algorithm of its type and curve. RSA keys (of at
least 2048 bits) and EC keys on P-256, P-384 and P-521 are used; symmetric, private and
encryption keys never are.

A withdrawn key (announced on ``auth.keys``) is dropped at once and remembered: a key set fetched
later that still lists it (a fetch in flight, a proxy's or CDN's copy within its max-age) never
brings it back, and its tokens are refused without a fetch. Every key that leaves the cache, by
withdrawal or because a fresh key set no longer lists it, is reported to ``on_dropped``.

The cache raises its own small exception tree (:class:`JwksError`); a service maps it to its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidKeyError

from realtime_gateway_protocol import wire_json
from shared.config.env import redact_url
from shared.http.client import IDENTITY, read_capped

__all__ = [
    "ALGORITHMS",
    "MAX_JWKS_BYTES",
    "MAX_WITHDRAWN",
    "MIN_RSA_BITS",
    "JwksCache",
    "JwksError",
    "KeyWithdrawn",
    "KeysUnavailable",
    "PublicKey",
    "UnknownKey",
    "VerifyingKey",
    "parse_jwks",
    "ttl_from_cache_control",
]

MIN_RSA_BITS = 2048
MAX_JWKS_BYTES = 256 * 1024
"""A key set's size at most, as sent: a few keys take a few KiB, and a larger answer is refused
before it is all read (it is parsed on the event loop)."""
MAX_WITHDRAWN = 256
"""Withdrawn kids remembered, the oldest forgotten first. Only announcements add one (a withdrawal
is an operator's rare act), so a bound this size is never reached in earnest, and nothing a client
sends can grow it."""
_RSA = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
ALGORITHMS = _RSA | frozenset(_EC.values())
"""The asymmetric JWS algorithms a key set may serve; never ``none`` nor an HMAC."""
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", re.IGNORECASE)

log = logging.getLogger(__name__)

PublicKey = RSAPublicKey | EllipticCurvePublicKey


class JwksError(Exception):
    """Root of the cache's errors."""


class KeysUnavailable(JwksError):
    """No key set could be fetched (none yet, or the refetch for an unknown kid failed)."""


class UnknownKey(JwksError):
    """The key set does not hold this kid (and may not be refetched yet)."""


class KeyWithdrawn(JwksError):
    """The kid was withdrawn: it never verifies again."""


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    """A public key and the algorithms it may verify (never empty)."""

    key: PublicKey
    algorithms: frozenset[str]


def parse_jwks(document: Any, algorithms: Collection[str]) -> dict[str, VerifyingKey]:
    """The usable keys of a JWKS document for an issuer pinned to ``algorithms``: public ``sig``
    keys with a ``kid``, RSA of at least 2048 bits or EC on a supported curve, whose algorithms
    (``alg``, or the type's) meet ``algorithms``."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set")
    pinned = frozenset(algorithms)
    keys: dict[str, VerifyingKey] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, Mapping):
            continue
        kid = jwk.get("kid")
        if jwk.get("use") != "sig" or "d" in jwk or not isinstance(kid, str) or not kid:
            continue
        usable = _algorithms_of(jwk) & pinned
        if "alg" in jwk:
            usable &= {jwk["alg"]} if isinstance(jwk["alg"], str) else set()
        if not usable:
            continue
        try:
            key = _public_key(jwk)
        except (InvalidKeyError, ValueError, TypeError, KeyError) as exc:
            log.warning("skipping malformed JWK", extra={"kid": kid, "error": str(exc)})
            continue
        if key is None:
            log.warning("skipping weak or non-public JWK", extra={"kid": kid})
            continue
        keys[kid] = VerifyingKey(key, frozenset(usable))
    return keys


def _algorithms_of(jwk: Mapping[str, Any]) -> frozenset[str]:
    """What a key of this type (and curve) can verify at all."""
    kty = jwk.get("kty")
    if kty == "RSA":
        return _RSA
    crv = jwk.get("crv")
    if kty == "EC" and isinstance(crv, str) and crv in _EC:
        return frozenset({_EC[crv]})
    return frozenset()


def _public_key(jwk: Mapping[str, Any]) -> PublicKey | None:
    """The key, or None when it is private or weak; malformed ones raise."""
    if jwk["kty"] == "RSA":
        rsa = RSAAlgorithm.from_jwk(dict(jwk))
        if isinstance(rsa, RSAPublicKey) and rsa.key_size >= MIN_RSA_BITS:
            return rsa
        return None
    ec = ECAlgorithm.from_jwk(dict(jwk))
    return ec if isinstance(ec, EllipticCurvePublicKey) else None


def ttl_from_cache_control(header: str | None, minimum: float, maximum: float) -> float:
    match = _MAX_AGE.search(header or "")
    ttl = float(match.group(1)) if match else minimum
    return min(max(ttl, minimum), maximum)


class JwksCache:
    """One issuer's keys, pinned to its ``algorithms``. ``run()`` is the background refresh loop."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        algorithms: Collection[str],
        min_ttl: float = 60.0,
        max_ttl: float = 3600.0,
        refetch_interval: float = 10.0,
        fetch_timeout: float = 5.0,
        on_fetch: Callable[[str], None] | None = None,
        on_dropped: Callable[[frozenset[str]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_withdrawn: int = MAX_WITHDRAWN,
    ) -> None:
        self._session = session
        self._url = url
        self._algorithms = frozenset(algorithms)
        self._min_ttl = min_ttl
        self._max_ttl = max_ttl
        self._refetch_interval = refetch_interval
        self._timeout = aiohttp.ClientTimeout(total=fetch_timeout)
        self._on_fetch = on_fetch or (lambda outcome: None)
        self._on_dropped = on_dropped or (lambda kids: None)
        self._clock = clock
        self._max_withdrawn = max_withdrawn
        self._withdrawn: dict[str, None] = {}  # insertion-ordered: the oldest is forgotten first
        self._keys: dict[str, VerifyingKey] = {}
        self._loaded = False
        self._ttl = min_ttl
        self._inflight: asyncio.Task[None] | None = None
        self._last_refetch = -math.inf
        self._fetched_at = -math.inf
        """When the key set held was fetched (epoch seconds, as a token's ``iat``)."""
        self._outage: tuple[float, str] | None = None

    @property
    def ready(self) -> bool:
        return self._loaded

    @property
    def outage(self) -> tuple[float, str] | None:
        """``(since, reason)`` while fetches fail: since the first failure (epoch seconds), and
        the last failure's reason. ``None`` once a fetch succeeds."""
        return self._outage

    async def refresh(self) -> None:
        """Fetch the key set, joining a fetch already in flight. Raises ``KeysUnavailable``."""
        if self._inflight is None:
            # A context of its own: the fetch serves every waiter, and its lines (a failure, keys
            # that left) belong to no one request, not the one that happened to start it.
            task = asyncio.get_running_loop().create_task(
                self._fetch(), context=contextvars.Context()
            )
            task.add_done_callback(self._fetch_done)
            self._inflight = task
        await asyncio.shield(self._inflight)

    def is_withdrawn(self, kid: str) -> bool:
        return kid in self._withdrawn

    def fetched_since(self, when: float) -> bool:
        """Whether the key set held was fetched at or after ``when`` (epoch seconds): a kid it
        lacks may be a key newer than it."""
        return self._fetched_at >= when

    def withdraw(self, kid: str) -> None:
        self._withdrawn.pop(kid, None)
        self._withdrawn[kid] = None
        while len(self._withdrawn) > self._max_withdrawn:
            del self._withdrawn[next(iter(self._withdrawn))]
        self._keys.pop(kid, None)
        log.warning("signing key withdrawn", extra={"kid": kid})
        self._on_dropped(frozenset((kid,)))

    async def get_key(self, kid: str) -> VerifyingKey:
        """Raises ``KeyWithdrawn``, ``UnknownKey`` or ``KeysUnavailable``."""
        key = self._keys.get(kid)
        if key is not None:
            return key
        if kid in self._withdrawn:
            raise KeyWithdrawn()
        if self._inflight is None:
            now = self._clock()
            if now - self._last_refetch < self._refetch_interval:
                if not self._loaded:
                    raise KeysUnavailable()
                raise UnknownKey("unknown signing key")
            self._last_refetch = now
        await self.refresh()
        key = self._keys.get(kid)
        if key is None:
            raise KeyWithdrawn() if kid in self._withdrawn else UnknownKey("unknown signing key")
        return key

    async def run(self) -> None:
        """Keep the key set fresh: refetch at its TTL, retry failures with capped backoff."""
        backoff = 1.0
        while True:
            try:
                await self.refresh()
            except KeysUnavailable:
                delay = min(backoff, self._min_ttl)
                backoff *= 2
            else:
                delay = self._ttl
                backoff = 1.0
            await asyncio.sleep(delay)

    async def close(self) -> None:
        """Cancel a fetch still in flight, before its HTTP session goes away."""
        task = self._inflight
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, KeysUnavailable):
                await task

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        self._inflight = None
        if not task.cancelled():
            task.exception()

    async def _fetch(self) -> None:
        try:
            async with self._session.get(
                self._url,
                timeout=self._timeout,
                headers=IDENTITY,
                allow_redirects=False,  # the keys come from the configured URL and nowhere else
                auto_decompress=False,
            ) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                document = wire_json.loads(await read_capped(response, MAX_JWKS_BYTES))
                cache_control = response.headers.get("Cache-Control")
            keys = {
                kid: key
                for kid, key in parse_jwks(document, self._algorithms).items()
                if kid not in self._withdrawn
            }
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._on_fetch("error")
            self._failed(str(exc) or type(exc).__name__)
            log.warning(
                "JWKS fetch failed", extra={"url": redact_url(self._url), "error": str(exc)}
            )
            raise KeysUnavailable() from exc
        if not keys:
            self._on_fetch("empty")
            self._failed("the key set holds no usable key")
            log.warning(
                "JWKS holds no usable key; keeping the previous set",
                extra={"url": redact_url(self._url)},
            )
            raise KeysUnavailable()
        dropped = frozenset(self._keys.keys() - keys.keys())
        self._keys = keys
        self._fetched_at = time.time()
        self._loaded = True
        self._outage = None
        self._ttl = ttl_from_cache_control(cache_control, self._min_ttl, self._max_ttl)
        self._on_fetch("ok")
        if dropped:
            log.info("signing keys left the key set", extra={"kids": sorted(dropped)})
            self._on_dropped(dropped)

    def _failed(self, reason: str) -> None:
        since = self._outage[0] if self._outage is not None else time.time()
        self._outage = (since, reason)
