"""The login throttle holds under a burst of simultaneous guesses, on both stores."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from auth_service.app import create_app
from auth_service.domain.errors import Throttled
from auth_service.domain.passwords import Passwords
from auth_service.domain.throttle import LoginThrottle, ThrottlePolicy
from auth_service.settings import Settings
from auth_service.store import open_store
from shared.bus import InProcessBus
from tests.integration.auth.conftest import PASSWORD, AuthClient, register

GUESSES = 150


async def test_simultaneous_guesses_reach_argon2_at_most_ten_times(
    aiohttp_client: Callable[..., Awaitable[AuthClient]],
    make_settings: Callable[..., Settings],
    bus: InProcessBus,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = await aiohttp_client(
        create_app(make_settings(database_url=database_url), bus=bus),
        connector=aiohttp.TCPConnector(limit=0),
    )
    await register(client)
    # Guesses admitted to argon2 wait there until every other guess has been answered or admitted,
    # so the correct password (in the middle of the burst) cannot reset the count early.
    admitted = settled = 0
    gate = asyncio.Event()
    verify = Passwords.verify

    def settle() -> None:
        nonlocal settled
        settled += 1
        if settled == GUESSES:
            gate.set()

    async def gated(self: Passwords, password_hash: str | None, password: str) -> bool:
        nonlocal admitted
        admitted += 1
        settle()
        await gate.wait()
        return await verify(self, password_hash, password)

    monkeypatch.setattr(Passwords, "verify", gated)

    async def attempt(password: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        resp = await client.post(
            "/v1/login",
            json={"username": "alice", "password": password},
            headers={"X-Forwarded-For": "10.0.0.1"},
        )
        if resp.status == 429:
            settle()
        return resp.status, dict(resp.headers), await resp.json()

    passwords = ["wrong password!"] * GUESSES
    passwords[GUESSES // 2] = PASSWORD
    results = await asyncio.wait_for(asyncio.gather(*(attempt(p) for p in passwords)), 60)

    assert admitted <= 10
    refused = [(headers, body) for status, headers, body in results if status == 429]
    assert len(refused) == GUESSES - admitted
    for headers, body in refused:
        assert int(headers["Retry-After"]) >= 1 and body["error"] == "too_many_attempts"
    logged_in = results[GUESSES // 2][0] == 200
    admitted_statuses = sorted(status for status, _, _ in results if status != 429)
    assert admitted_statuses == [200] * logged_in + [401] * (admitted - logged_in)
    metrics = await (await client.get("/metrics")).text()
    assert f"auth_password_verifications_total {float(admitted)}" in metrics


async def test_the_attempt_reaching_a_limit_blocks_and_a_success_gives_it_back(
    make_settings: Callable[..., Settings],
) -> None:
    store = await open_store(make_settings().database_url)
    throttle = LoginThrottle(store, ThrottlePolicy(pair_limit=2, address_limit=3))

    async def refused(username: str, now: float) -> int:
        with pytest.raises(Throttled) as exc:
            await throttle.reserve(username, "ip", now)
        return exc.value.retry_after

    try:
        await throttle.reserve("a", "ip", 100.0)
        last = await throttle.reserve("a", "ip", 100.0)
        assert await refused("a", 100.0) == 30
        await throttle.succeeded(last)
        await throttle.reserve("a", "ip", 100.0)
        reaching = await throttle.reserve("b", "ip", 100.0)
        assert await refused("c", 100.0) == 30, "the address limit"
        await throttle.succeeded(reaching)
        await throttle.reserve("c", "ip", 100.0)
        assert await refused("d", 110.0) == 20
        after_block = await throttle.reserve("d", "ip", 130.0)
        assert await refused("e", 130.0) == 60, "the next block doubles"
        await throttle.succeeded(after_block)
        await throttle.reserve("e", "ip", 130.0)
        assert await refused("f", 130.0) == 60
    finally:
        await store.close()


async def test_a_check_reads_without_writing_and_still_sees_a_block(database_url: str) -> None:
    """A client's authentication checks the throttle before comparing its secret: a read, not a
    write transaction with placeholder rows (on SQLite the one writer of the database)."""
    store = await open_store(database_url)
    throttle = LoginThrottle(store, ThrottlePolicy(pair_limit=1, address_limit=100))
    try:
        await throttle.check("client:app", "ip", 100.0)
        assert await store.purge_expired(1e9) == 0, "the check left throttle rows behind"
        await throttle.reserve("client:app", "ip", 100.0)  # the first attempt reaches the limit
        with pytest.raises(Throttled) as refused:
            await throttle.check("client:app", "ip", 101.0)
        assert refused.value.retry_after == 29
        await throttle.check("client:other", "ip", 101.0)
    finally:
        await store.close()
