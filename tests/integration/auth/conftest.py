"""Fixtures for driving the real auth_service app through aiohttp_client."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from auth_service.app import create_app
from auth_service.settings import Settings
from realtime_gateway_protocol.events import REVOCATIONS_TOPIC, RevocationEvent, decode_event
from shared.bus import InProcessBus

PASSWORD = "correct horse battery staple"

AuthClient = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[AuthClient]]


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        base = Settings(
            issuer="http://auth.test",
            database_url=f"sqlite:///{tmp_path / 'auth.db'}",
            data_dir=tmp_path,
            key_encryption_secrets=("test-secret-0123456789abcdef",),
            forwarded_allow_ips=("127.0.0.1",),
        )
        return dataclasses.replace(base, **overrides)

    return make


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, make_settings: Callable[..., Settings]) -> str:
    """Each real store in turn: SQLite in tmp_path, then a fresh schema on the PostgreSQL server."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return make_settings().database_url


@pytest.fixture
def bus() -> InProcessBus:
    return InProcessBus()


@pytest.fixture
def events(bus: InProcessBus) -> list[RevocationEvent]:
    seen: list[RevocationEvent] = []
    bus.subscribe(REVOCATIONS_TOPIC, lambda topic, payload: seen.append(decode_event(payload)))
    return seen


@pytest.fixture
def make_client(
    aiohttp_client: Callable[..., Awaitable[AuthClient]],
    make_settings: Callable[..., Settings],
    bus: InProcessBus,
) -> MakeClient:
    async def make(**overrides: Any) -> AuthClient:
        return await aiohttp_client(create_app(make_settings(**overrides), bus=bus))

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> AuthClient:
    return await make_client()


async def register(client: AuthClient, username: str = "alice", password: str = PASSWORD) -> str:
    resp = await client.post("/v1/register", json={"username": username, "password": password})
    assert resp.status == 201, await resp.text()
    user_id: str = (await resp.json())["id"]
    return user_id


async def login(
    client: AuthClient, username: str = "alice", password: str = PASSWORD, address: str = "10.0.0.1"
) -> dict[str, Any]:
    resp = await client.post(
        "/v1/login",
        json={"username": username, "password": password},
        headers={"X-Forwarded-For": address},
    )
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def refresh(
    client: AuthClient, refresh_token: str, **extra: str
) -> tuple[int, dict[str, Any]]:
    """A form refresh grant, with ``extra`` form fields; its status and JSON body."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}
    resp = await client.post("/v1/token", data=form)
    return resp.status, await resp.json()
