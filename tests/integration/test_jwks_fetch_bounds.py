"""What an issuer's key-set server may make a fetch do, over real HTTP: it cannot move the keys
elsewhere (no redirect is followed), unpack a small answer into a large one (no compressed answer
is taken), or make the process read, hold or parse more than ``MAX_JWKS_BYTES`` (an outside probe
made one token exchange take a shared auth_service from 261 MB to 1 GB with a gzip bomb)."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from shared.http.jwks import MAX_JWKS_BYTES, JwksCache, KeysUnavailable

KID = "k1"


def key_set(padding: int = 0) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    jwk = {**json.loads(RSAAlgorithm.to_jwk(key)), "kid": KID, "use": "sig", "alg": "RS256"}
    return json.dumps({"keys": [jwk], "padding": "x" * padding}).encode()


@pytest.fixture
async def issuer() -> AsyncIterator[TestServer]:
    good = key_set()
    big = key_set(MAX_JWKS_BYTES)

    async def ok(request: web.Request) -> web.Response:
        return web.Response(body=good, content_type="application/json")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ok")

    async def gzipped(request: web.Request) -> web.Response:
        headers = {"Content-Encoding": "gzip"}
        return web.Response(
            body=gzip.compress(good), headers=headers, content_type="application/json"
        )

    async def announced(request: web.Request) -> web.Response:
        return web.Response(body=big, content_type="application/json")

    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(big), 16384):
            await response.write(big[start : start + 16384])
        await response.write_eof()
        return response

    async def deep(request: web.Request) -> web.Response:
        return web.Response(body=b"[" * 50_000, content_type="application/json")

    app = web.Application()
    for path, handler in [("/ok", ok), ("/redirect", redirect), ("/gzip", gzipped),
                          ("/announced", announced), ("/streamed", streamed), ("/deep", deep)]:  # fmt: skip
        app.router.add_get(path, handler)
    server = TestServer(app)
    await server.start_server()
    yield server
    await server.close()


async def fetch(server: TestServer, path: str) -> JwksCache:
    async with aiohttp.ClientSession() as session:
        cache = JwksCache(session, str(server.make_url(path)), algorithms=("RS256",))
        await cache.refresh()
        return cache


async def test_a_plain_key_set_is_taken(issuer: TestServer) -> None:
    cache = await fetch(issuer, "/ok")
    assert (await cache.get_key(KID)).algorithms == {"RS256"}


@pytest.mark.parametrize("path", ["/redirect", "/gzip", "/announced", "/streamed", "/deep"])
async def test_a_key_set_moved_compressed_too_large_or_too_deep_is_refused(
    issuer: TestServer, path: str
) -> None:
    with pytest.raises(KeysUnavailable):
        await fetch(issuer, path)
