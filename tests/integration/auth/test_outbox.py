"""A revocation the bus refuses is kept in the database and delivered once the bus is back; an
event that fails for any other reason is retried, then set aside, and never holds back the rest."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from auth_service.app import create_app
from auth_service.appkeys import PUBLISHER, STORE
from auth_service.domain.outbox import EventPublisher, RetryPolicy, replay_dead_letters
from auth_service.domain.store import Store
from auth_service.store import open_store
from realtime_gateway_protocol.events import (
    REVOCATIONS_TOPIC,
    SessionRevoked,
    decode_event,
    encode_event,
)
from shared.bus import BusUnavailable, InProcessBus
from tests.integration.auth.conftest import AuthClient, login, register

POISON = '{"type":"session_revoked","sid":"written-by-an-older-version"}'
"""A payload this version's ``decode_event`` refuses (no ``sub``, no ``until``)."""


class FlakyBus(InProcessBus):
    """A real in-process bus that can be switched off, as Redis is when it goes down."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def publish(self, topic: str, payload: str) -> None:
        if self.down:
            raise BusUnavailable("bus is down")
        await super().publish(topic, payload)


class Seen:
    """Every revocation payload the bus carried, in order."""

    def __init__(self, bus: InProcessBus) -> None:
        self.payloads: list[str] = []
        bus.subscribe(REVOCATIONS_TOPIC, lambda topic, payload: self.payloads.append(payload))


async def eventually(check: Callable[[], Awaitable[bool]], wait: float = 10.0) -> None:
    """Poll ``check`` until it holds (the outbox loop runs every OUTBOX_INTERVAL)."""
    deadline = time.monotonic() + wait
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def event(sid: str) -> str:
    return encode_event(SessionRevoked(sid=sid, sub="alice", until=int(time.time()) + 300))


def sids(payloads: list[str]) -> list[str]:
    events = [decode_event(payload) for payload in payloads]
    return [e.sid for e in events if isinstance(e, SessionRevoked)]


@asynccontextmanager
async def opened(database_url: str) -> AsyncIterator[Store]:
    store = await open_store(database_url)
    try:
        yield store
    finally:
        await store.close()


async def rename_table(database_url: str, old: str, new: str) -> None:
    """Another client renames a table under the running service: its next query fails."""
    sql = f"ALTER TABLE {old} RENAME TO {new}"
    if database_url.startswith("sqlite:///"):
        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        try:
            conn.execute(sql)
            conn.commit()
        finally:
            conn.close()
        return
    pg = await asyncpg.connect(database_url)
    try:
        await pg.execute(sql)
    finally:
        await pg.close()


async def readiness(client: AuthClient) -> dict[str, Any]:
    body: dict[str, Any] = await (await client.get("/readyz")).json()
    return body


async def test_logout_while_the_bus_is_down_is_delivered_later(
    aiohttp_client: Callable[[web.Application], Awaitable[AuthClient]],
    make_settings: Callable[..., Any],
) -> None:
    bus = FlakyBus()
    seen: list[str] = []
    delivered = asyncio.Event()

    def on_event(topic: str, payload: str) -> None:
        seen.append(payload)
        delivered.set()

    bus.subscribe(REVOCATIONS_TOPIC, on_event)
    app = create_app(make_settings(), bus=bus)
    client = await aiohttp_client(app)
    await register(client)
    tokens = await login(client)
    bus.down = True
    resp = await client.post(
        "/v1/logout", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert resp.status == 200, "logout succeeds even though the event could not be sent yet"
    ready = await readiness(client)
    assert ready["ready"] is True
    assert ready["degraded"]["outbox"].startswith("1 event(s) waiting, the oldest for ")
    assert "the event bus refuses them (bus is down)" in ready["degraded"]["outbox"]
    assert await app[PUBLISHER].flush() == 0
    assert seen == []
    bus.down = False
    await asyncio.wait_for(delivered.wait(), 5)
    (event,) = [decode_event(p) for p in seen]
    assert isinstance(event, SessionRevoked), "the outbox loop delivered it by itself, once"
    assert await app[PUBLISHER].flush() == 0
    assert (await readiness(client))["degraded"] == {}


class CutBus(FlakyBus):
    """A bus that knows it is cut off (as the Redis bus knows once its health check fails), and
    counts what is asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.publishes = 0

    @property
    def connected(self) -> bool:
        return not self.down

    async def publish(self, topic: str, payload: str) -> None:
        self.publishes += 1
        await super().publish(topic, payload)


async def test_a_logout_everywhere_does_not_wait_on_a_bus_known_to_be_down(
    aiohttp_client: Callable[[web.Application], Awaitable[AuthClient]],
    make_settings: Callable[..., Any],
) -> None:
    """An outside probe: each event of a logout was tried on a Redis that auth_service already
    knew was down, about 7 s each, one after another, so a logout of 4 sessions outlasted the
    shutdown grace of a rolling deploy. Its events go to the outbox at once, in its transaction,
    due to the next flush."""
    bus = CutBus()
    seen = Seen(bus)
    app = create_app(make_settings(), bus=bus)
    client = await aiohttp_client(app)
    await register(client)
    sessions = [await login(client) for _ in range(4)]
    bus.down = True
    resp = await client.post(
        "/v1/logout",
        json={"all": True},
        headers={"Authorization": f"Bearer {sessions[0]['access_token']}"},
    )
    assert resp.status == 200, await resp.text()
    assert bus.publishes == 0, "the bus was tried though it was known to be down"
    store = app[STORE]
    assert len(await store.outbox_batch(10, due_by=time.time())) == 5  # 4 sessions, the user
    bus.down = False
    await eventually(lambda: asyncio.sleep(0, len(seen.payloads) == 5))
    assert len(set(sids(seen.payloads))) == 4
    assert await store.outbox_batch(10) == []


async def test_a_poison_event_is_retried_with_backoff_then_set_aside(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Driven by hand with a fake clock: each attempt waits for its backoff, the last one moves
    the event to the dead letters, and a replay gives it a fresh set of attempts."""
    bus = InProcessBus()
    seen = Seen(bus)
    now = [1000.0]
    outcomes: list[tuple[str, int]] = []
    async with opened(database_url) as store:
        publisher = EventPublisher(
            bus,
            store,
            clock=lambda: now[0],
            retry=RetryPolicy(max_attempts=3, base=10.0, cap=100.0),
            on_outcome=lambda outcome, events: outcomes.append((outcome, events)),
            rand=lambda: 0.0,
        )
        await store.add_outbox(REVOCATIONS_TOPIC, POISON, now[0])
        await store.add_outbox(REVOCATIONS_TOPIC, event("good"), now[0])
        assert await publisher.flush() == 1
        assert sids(seen.payloads) == ["good"]
        (poison,) = await store.outbox_batch(10)
        assert poison.attempts == 1 and "malformed revocation event" in (poison.last_error or "")
        assert poison.next_attempt_at == now[0] + 5.0, "half of base, the jitter's floor"
        assert await publisher.describe_backlog() == (
            "1 event(s) waiting, the oldest for 0 s: events wait for their next attempt "
            "(malformed revocation event: 'sub')"
        )
        assert await publisher.flush() == 0
        assert (await store.outbox_batch(10))[0].attempts == 1, "not retried before its time"
        now[0] += 5.0
        await publisher.flush()
        assert (await store.outbox_batch(10))[0].attempts == 2
        assert (await store.outbox_batch(10, due_by=now[0] + 9.9)) == []
        now[0] += 10.0
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="auth_service.domain.outbox"):
            await store.add_outbox(REVOCATIONS_TOPIC, event("after"), now[0])
            assert await publisher.flush() == 1
        assert await store.outbox_batch(10) == []
        (dead,) = await store.outbox_dead_letters(10)
        assert (dead.id, dead.attempts, dead.dead_at) == (poison.id, 3, now[0])
        assert [r.levelname for r in caplog.records if "dead letters" in r.getMessage()] == [
            "ERROR"
        ]
        assert outcomes == [
            ("retry", 1),
            ("delivered", 1),
            ("retry", 1),
            ("dead_letter", 1),
            ("delivered", 1),
        ]
        assert await publisher.describe_backlog() is None
        backlog = await store.outbox_backlog()
        assert (backlog.waiting, backlog.oldest_at, backlog.dead) == (0, None, 1)

        (replayed,) = await replay_dead_letters(store, None)
        assert replayed.id == poison.id
        (again,) = await store.outbox_batch(10, due_by=now[0])
        assert (again.attempts, again.dead_at) == (0, None)
        assert again.last_error == dead.last_error, "the last error stays for reference"


async def test_a_poison_event_does_not_hold_back_later_revocations(
    aiohttp_client: Callable[[web.Application], Awaitable[AuthClient]],
    make_settings: Callable[..., Any],
    database_url: str,
    redis_url: str,
) -> None:
    """The service as deployed (a Redis ledger records each revocation before it is announced),
    with a row an older version wrote at the head of the outbox."""
    expected = [f"after-poison-{uuid.uuid4().hex}" for _ in range(2)]
    async with opened(database_url) as store:
        await store.add_outbox(REVOCATIONS_TOPIC, POISON, time.time())
        for sid in expected:
            await store.add_outbox(REVOCATIONS_TOPIC, event(sid), time.time())
    bus = InProcessBus()
    seen = Seen(bus)
    now = [time.time()]  # held still: the poison's retry never comes due during the test
    settings = make_settings(database_url=database_url, redis_url=redis_url)
    client = await aiohttp_client(create_app(settings, bus=bus, clock=lambda: now[0]))

    async def delivered() -> bool:
        return len(seen.payloads) == len(expected)

    await eventually(delivered)
    assert sids(seen.payloads) == expected
    ready = await readiness(client)
    assert ready["ready"] is True
    assert ready["degraded"]["outbox"].startswith("1 event(s) waiting, the oldest for ")
    assert "malformed revocation event" in ready["degraded"]["outbox"]
    metrics = await (await client.get("/metrics")).text()
    assert 'auth_outbox_events_total{outcome="delivered"} 2.0' in metrics
    assert 'auth_outbox_events_total{outcome="retry"} 1.0' in metrics
    assert 'outcome="dead_letter"' not in metrics


async def test_the_outbox_loop_outlives_a_store_that_is_down_at_start_up(
    aiohttp_client: Callable[[web.Application], Awaitable[AuthClient]],
    make_settings: Callable[..., Any],
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with opened(database_url) as store:
        await store.add_outbox(REVOCATIONS_TOPIC, event("kept"), time.time())
    await rename_table(database_url, "outbox", "outbox_away")
    bus = InProcessBus()
    seen = Seen(bus)
    with caplog.at_level(logging.INFO, logger="auth_service.domain.outbox"):
        client = await aiohttp_client(create_app(make_settings(database_url=database_url), bus=bus))

        async def failing() -> bool:
            return "outbox" in (await readiness(client))["degraded"]

        await eventually(failing)
        held_up = (await readiness(client))["degraded"]["outbox"]
        assert held_up.startswith("the outbox cannot be read or updated ("), held_up
        for _ in range(2):
            assert await client.app[PUBLISHER].flush() == 0
        failures = [r for r in caplog.records if "outbox held up" in r.getMessage()]
        assert len(failures) == 1 and failures[0].exc_info is not None
        await rename_table(database_url, "outbox_away", "outbox")

        async def delivered() -> bool:
            return bool(seen.payloads) and (await readiness(client))["degraded"] == {}

        await eventually(delivered)
    assert sids(seen.payloads) == ["kept"]
    assert any("outbox clear" in r.getMessage() for r in caplog.records)
