"""ws_service integration fixtures: a real RSA key, a JWKS served over HTTP, the real app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from shared.bus import EventBus, InProcessBus
from tests.integration.ws.harness import AUDIENCE, ISSUER, Harness, KeySet, Tokens, wait_until
from ws_service.app import create_app
from ws_service.appkeys import BUS, JWKS
from ws_service.settings import Settings

KID = "key-1"

MakeGateway = Callable[..., Awaitable[Harness]]


@pytest.fixture(scope="session")
def rsa_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def other_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def make_gateway(aiohttp_server: Any, aiohttp_client: Any, rsa_key: RSAPrivateKey) -> MakeGateway:
    """Start a JWKS server and ws_service; keyword arguments override ``Settings`` fields. With
    ``redis_url`` and no ``bus`` the app opens its own Redis bus, as a deployed replica does."""

    async def make(
        *,
        bus: EventBus | None = None,
        wait_ready: bool = True,
        keyset: KeySet | None = None,
        **overrides: Any,
    ) -> Harness:
        keyset = keyset or KeySet({KID: rsa_key})
        jwks_server = await aiohttp_server(keyset.app())
        fields: dict[str, Any] = {
            "jwks_url": str(jwks_server.make_url("/.well-known/jwks.json")),
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "leeway": 0,
            "expiry_warning": 1.0,
            "api_keys": ("test-api-key-0123456789",),
            "jwks_min_ttl": 1.0,
            "close_timeout": 1.0,
            "shutdown_timeout": 2.0,
        }
        fields.update(overrides)
        settings = Settings(**fields)
        if bus is None and not settings.redis_url:
            bus = InProcessBus()
        app = create_app(settings, bus=bus)
        client = await aiohttp_client(app)
        harness = Harness(client, app, app[BUS], keyset, Tokens(rsa_key, KID), jwks_server)
        if wait_ready:
            await wait_until(lambda: app[JWKS].ready)
        return harness

    return make


@pytest.fixture
async def gw(make_gateway: MakeGateway) -> Harness:
    return await make_gateway()
