"""The real two-service stack, shared by the client tests and the end-to-end tests."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from auth_service.app import create_app as create_auth_app
from auth_service.settings import Settings as AuthSettings
from shared.bus import InProcessBus
from tests.integration.bus.support import PrivateRedis
from tests.integration.stack import API_KEY, MakeStack, Overrides, Stack
from tests.integration.ws.harness import wait_until
from tests.services import free_port, unavailable
from ws_service.app import create_app as create_ws_app
from ws_service.appkeys import JWKS
from ws_service.settings import Settings as WsSettings


@pytest.fixture
def make_stack(aiohttp_client: Any, tmp_path: Path) -> MakeStack:
    """auth_service on a port chosen first, so that its issuer is its real URL, then ws_service
    trusting that issuer and its JWKS (on a port chosen first too, so that its public URL, what
    DPoP proofs name, is its real one), both on one bus."""

    async def make(*, auth: Overrides = None, ws: Overrides = None) -> Stack:
        port = free_port()
        issuer = f"http://127.0.0.1:{port}"
        bus = InProcessBus()
        auth_settings = AuthSettings(
            **{
                "issuer": issuer,
                "database_url": f"sqlite:///{tmp_path / 'auth.db'}",
                "data_dir": tmp_path,
                "key_encryption_secrets": ("test-secret-0123456789abcdef",),
                **(auth or {}),
            }
        )
        auth_client = await aiohttp_client(
            create_auth_app(auth_settings, bus=bus), server_kwargs={"port": port}
        )
        ws_port = free_port()
        ws_settings = WsSettings(
            **{
                "port": ws_port,
                "issuer": issuer,
                "jwks_url": auth_settings.jwks_uri,
                "leeway": 0,
                "expiry_warning": 1.0,
                "api_keys": (API_KEY,),
                "jwks_min_ttl": 1.0,
                "close_timeout": 1.0,
                "shutdown_timeout": 2.0,
                **(ws or {}),
            }
        )
        ws_app = create_ws_app(ws_settings, bus=bus)
        ws_client = await aiohttp_client(ws_app, server_kwargs={"port": ws_port})
        await wait_until(lambda: ws_app[JWKS].ready)
        return Stack(auth_client, ws_client, bus)

    return make


@pytest.fixture
def redis_server_binary() -> str:
    """For tests that start (and kill) a redis-server of their own."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server", "the binary is not installed (Debian package redis-server)")
        raise AssertionError("unreachable")
    return binary


@pytest.fixture
async def private_redis(redis_server_binary: str) -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis(redis_server_binary)
    await server.start()
    try:
        yield server
    finally:
        await server.kill()
