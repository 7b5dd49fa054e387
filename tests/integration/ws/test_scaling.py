"""ws_service scaled out on the real Redis: replicas sharing channels, the revocation ledger, and
what a replica does while Redis is down and once it is back."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from realtime_gateway_protocol.events import SessionRevoked, UserRevoked
from shared.redis.bus import RedisBus
from shared.redis.ledger import RedisRevocationLedger
from tests.integration.bus.support import PrivateRedis
from tests.integration.ws.conftest import MakeGateway
from tests.integration.ws.harness import (
    Harness,
    auth,
    expect_close,
    expect_open,
    recv,
    send,
    wait_until,
)
from ws_service.appkeys import GATEWAY, METRICS

REVOKED = {
    "type": "auth_error",
    "code": "session_revoked",
    "message": "the session has been revoked",
    "retry": False,
}


def unique() -> str:
    return uuid.uuid4().hex


def count(gw: Harness, name: str, **labels: str) -> float:
    return gw.app[METRICS].registry.get_sample_value(name, labels) or 0.0


async def subscribe(ws: Any, channel: str) -> None:
    await send(ws, {"type": "subscribe", "channel": channel})
    reply = await recv(ws)
    assert (reply["type"], reply["channel"]) == ("subscribed", channel), reply


async def publish(ws: Any, channel: str, data: Any) -> None:
    """Publish and consume the ack (the publisher is not subscribed)."""
    await send(ws, {"type": "publish", "channel": channel, "data": data})
    assert await recv(ws) == {"type": "published", "channel": channel}


@pytest.fixture
async def ledger(redis_url: str) -> AsyncIterator[RedisRevocationLedger]:
    opened = RedisRevocationLedger(redis_url)
    yield opened
    await opened.close()


async def test_a_message_reaches_subscribers_on_every_replica_exactly_once(
    make_gateway: MakeGateway, redis_url: str
) -> None:
    one = await make_gateway(redis_url=redis_url)
    two = await make_gateway(redis_url=redis_url)
    assert isinstance(one.bus, RedisBus) and isinstance(two.bus, RedisBus)
    assert one.bus is not two.bus
    channel = f"chat:{unique()}"
    alice = await one.login("alice")
    carol = await two.login("carol")
    bob = await two.login("bob")
    for ws in (alice, carol):
        await subscribe(ws, channel)
    for n in (1, 2):
        await publish(bob, channel, {"n": n})
    for ws in (alice, carol):
        first, second = await recv(ws), await recv(ws)
        assert (first["from"], first["from_username"], first["data"]) == ("bob", "Bob", {"n": 1})
        assert second["data"] == {"n": 2}, "the first message came twice"
    assert count(one, "ws_local_only_publishes_total") == 0
    assert count(two, "ws_local_only_publishes_total") == 0


@pytest.mark.parametrize("kind", ["session", "user"])
async def test_a_revocation_only_in_the_ledger_refuses_auth_and_renewal_with_4403(
    make_gateway: MakeGateway,
    redis_url: str,
    ledger: RedisRevocationLedger,
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No bus event: only the record auth_service writes to Redis knows of these revocations.
    Each refusal's audit line names the user (from the ledger, then from this replica's own
    registry)."""
    caplog.set_level(logging.INFO, logger="audit")
    gw = await make_gateway(redis_url=redis_url)
    sub, new_sid, live_sid = unique(), unique(), unique()
    live = await gw.login(sub, sid=live_sid)
    until = int(time.time()) + 60
    if kind == "session":
        for sid in (new_sid, live_sid):
            await ledger.record(SessionRevoked(sid=sid, sub=sub, until=until))
    else:
        await ledger.record(UserRevoked(sub=sub, issued_before=int(time.time()) + 1, until=until))

    fresh = await gw.open()
    assert await auth(fresh, gw.tokens.make(sub, sid=new_sid)) == REVOKED
    await expect_close(fresh, 4403, "session_revoked")
    renewal = gw.tokens.make(sub, sid=live_sid)
    assert await auth(live, renewal, id="renew") == {**REVOKED, "id": "renew"}
    await expect_close(live, 4403, "session_revoked")
    assert count(gw, "ws_ledger_checks_total", outcome="revoked") == 2

    again = await gw.open()
    assert await auth(again, gw.tokens.make(sub, sid=new_sid)) == REVOKED
    assert count(gw, "ws_ledger_checks_total", outcome="revoked") == 2, "not refused locally"
    assert gw.app[GATEWAY].revocations.is_revoked(sub, new_sid, int(time.time()))
    assert count(gw, "ws_ledger_checks_total", outcome="ok") == 1
    refused = [r for r in caplog.records if getattr(r, "event", None) == "ws_auth_failure"]
    assert [(getattr(r, "code", None), getattr(r, "sub", None)) for r in refused] == [
        ("session_revoked", sub)
    ] * 3
    await gw.login(unique())
    assert count(gw, "ws_ledger_checks_total", outcome="ok") == 2


@pytest.fixture
async def durable_redis(redis_server_binary: str, tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    """A private redis-server that keeps its data across a kill and restart, as a production
    Redis with an append-only file does."""
    server = PrivateRedis(
        redis_server_binary,
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        str(tmp_path),
    )
    await server.start()
    yield server
    await server.kill()


@pytest.fixture
async def quick_bus(durable_redis: PrivateRedis) -> AsyncIterator[RedisBus]:
    """The replica's bus, reconnecting within a fraction of a second."""
    bus = RedisBus(durable_redis.url, backoff_base=0.05, backoff_cap=0.2)
    await bus.start()
    yield bus
    await bus.close()


async def test_redis_down_local_traffic_flows_and_missed_revocations_close_on_reconnect(
    quick_bus: RedisBus, durable_redis: PrivateRedis, make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(bus=quick_bus, redis_url=durable_redis.url)
    alice, carol = await gw.login("alice"), await gw.login("carol")
    bob = await gw.login("bob", sid="sid-bob")
    await subscribe(carol, "chat:room")
    ledger = RedisRevocationLedger(durable_redis.url)
    try:
        # auth_service recorded bob's logout, but its event never reached this replica.
        await ledger.record(SessionRevoked(sid="sid-bob", sub="bob", until=int(time.time()) + 60))
    finally:
        await ledger.close()
    await expect_open(bob)

    await durable_redis.kill()
    await wait_until(lambda: not quick_bus.connected)
    ready = await gw.client.get("/readyz")
    assert (ready.status, await ready.json()) == (
        200,
        {
            "ready": True,
            "checks": {"signing_keys": "ok"},
            "degraded": {"event_bus": "redis unreachable"},
        },
    )
    await publish(alice, "chat:room", {"n": 1})
    assert (await recv(carol))["data"] == {"n": 1}
    assert count(gw, "ws_local_only_publishes_total") == 1
    await subscribe(carol, "chat:new")  # answered at once, not after Redis returns
    await gw.login("dave")  # the ledger is unreachable: accepted
    assert count(gw, "ws_ledger_checks_total", outcome="unavailable") == 1
    await expect_open(bob)

    await durable_redis.start()
    assert await recv(bob, wait=5) == {"type": "revoked", "reason": "session_revoked"}
    await expect_close(bob, 4403, "session_revoked")
    assert count(gw, "ws_reconciliations_total", outcome="ok") == 1
    ready = await gw.client.get("/readyz")
    assert (ready.status, (await ready.json())["degraded"]) == (200, {})
    await publish(alice, "chat:room", {"n": 2})
    assert (await recv(carol))["data"] == {"n": 2}, "the first message came twice"
    assert count(gw, "ws_local_only_publishes_total") == 1
    await expect_open(alice)
