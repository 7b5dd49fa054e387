"""The key cache's withdrawn set: a withdrawn key leaves at once, is refused without a fetch,
never comes back with a later (or in-flight, or stale) key set, and the set stays bounded. Keys
that leave the cache are reported. A fake HTTP session serves the key sets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from jwt.algorithms import RSAAlgorithm

from shared.http.jwks import JwksCache, KeyWithdrawn, UnknownKey
from shared.jsonlog import REQUEST_ID


class Response:
    def __init__(self, body: bytes, gate: asyncio.Event | None) -> None:
        self.status = 200
        self.headers = {"Cache-Control": "public, max-age=300"}
        self.content_length = None
        self.content = self
        self._body = body
        self._gate = gate

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def iter_any(self) -> AsyncIterator[bytes]:
        if self._gate is not None:
            await self._gate.wait()
        yield self._body


class Issuer:
    """Serves a JWKS of the named keys; ``gate`` holds the next responses back until set."""

    def __init__(self, key: RSAPrivateKey, *kids: str) -> None:
        self.jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
        self.kids = list(kids)
        self.fetches = 0
        self.request_ids: list[str | None] = []
        self.gate: asyncio.Event | None = None

    def get(self, url: str, **options: Any) -> Response:
        self.fetches += 1
        self.request_ids.append(REQUEST_ID.get())
        keys = [{**self.jwk, "kid": kid, "use": "sig", "alg": "RS256"} for kid in self.kids]
        return Response(json.dumps({"keys": keys}).encode(), self.gate)

    @contextmanager
    def held(self) -> Iterator[asyncio.Event]:
        self.gate = asyncio.Event()
        try:
            yield self.gate
        finally:
            self.gate = None


@pytest.fixture(scope="module")
def rsa_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def cache(issuer: Issuer, dropped: list[frozenset[str]], **options: Any) -> JwksCache:
    return JwksCache(
        issuer,  # type: ignore[arg-type]
        "http://auth.test/.well-known/jwks.json",
        algorithms=("RS256",),
        refetch_interval=0,
        on_dropped=dropped.append,
        **options,
    )


async def test_a_withdrawn_key_leaves_at_once_and_is_refused_without_a_fetch(
    rsa_key: RSAPrivateKey,
) -> None:
    issuer, dropped = Issuer(rsa_key, "k1", "k2"), []
    keys = cache(issuer, dropped)
    await keys.refresh()
    await keys.get_key("k1")
    keys.withdraw("k1")
    assert dropped == [frozenset({"k1"})]
    assert keys.is_withdrawn("k1") and not keys.is_withdrawn("k2")
    with pytest.raises(KeyWithdrawn):
        await keys.get_key("k1")
    assert issuer.fetches == 1, "a withdrawn kid is never fetched"
    await keys.get_key("k2")


async def test_a_key_set_that_still_lists_it_never_brings_it_back(
    rsa_key: RSAPrivateKey,
) -> None:
    issuer, dropped = Issuer(rsa_key, "k1", "k2"), []
    keys = cache(issuer, dropped)
    await keys.refresh()
    keys.withdraw("k1")
    await keys.refresh()  # a proxy's stale copy, within its max-age
    with pytest.raises(KeyWithdrawn):
        await keys.get_key("k1")
    assert dropped == [frozenset({"k1"})], "the stale set neither restores nor re-reports it"


async def test_a_fetch_in_flight_at_the_withdrawal_does_not_bring_it_back(
    rsa_key: RSAPrivateKey,
) -> None:
    issuer, dropped = Issuer(rsa_key, "k1"), []
    keys = cache(issuer, dropped)
    with issuer.held() as gate:
        fetch = asyncio.ensure_future(keys.refresh())
        await asyncio.sleep(0)
        keys.withdraw("k1")
        issuer.kids.append("k2")
        gate.set()
        await fetch
    with pytest.raises(KeyWithdrawn):
        await keys.get_key("k1")
    await keys.get_key("k2")


async def test_the_withdrawn_set_is_bounded_oldest_forgotten_first(
    rsa_key: RSAPrivateKey,
) -> None:
    keys = cache(Issuer(rsa_key, "k1"), [], max_withdrawn=3)
    for n in range(5):
        keys.withdraw(f"w{n}")
    keys.withdraw("w2")  # withdrawn again: now the newest
    assert [keys.is_withdrawn(f"w{n}") for n in range(5)] == [False, False, True, True, True]
    keys.withdraw("w5")
    assert [keys.is_withdrawn(f"w{n}") for n in range(6)] == [False, False, True, False, True, True]


async def test_keys_a_fresh_key_set_no_longer_lists_are_reported(
    rsa_key: RSAPrivateKey,
) -> None:
    issuer, dropped = Issuer(rsa_key, "k1", "k2"), []
    keys = cache(issuer, dropped)
    await keys.refresh()
    assert dropped == [], "the first load drops nothing"
    issuer.kids = ["k2", "k3"]
    await keys.refresh()
    assert dropped == [frozenset({"k1"})]
    with pytest.raises(UnknownKey, match="unknown signing key"):
        await keys.get_key("k1")
    assert not keys.is_withdrawn("k1"), "a key that left the set is not withdrawn"


async def test_a_fetch_belongs_to_no_request(rsa_key: RSAPrivateKey) -> None:
    """Its lines must not carry the id of whichever request started it (a client may choose
    that id), nor of the requests that joined it."""
    issuer = Issuer(rsa_key, "k1")
    keys = cache(issuer, [])
    REQUEST_ID.set("chosen-by-a-client")
    await keys.refresh()
    assert issuer.request_ids == [None]
