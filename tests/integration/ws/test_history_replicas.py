"""History, recovery and presence on two ws replicas (two apps, two Redis buses) over a private
redis-server, which the tests may flush."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.integration.bus.support import PrivateRedis
from tests.integration.ws.conftest import MakeGateway
from tests.integration.ws.harness import Harness, recv, send
from tests.integration.ws.test_history import (
    messages,
    offsets,
    over_budget,
    publish,
    request,
    unsubscribe_then_presence,
)

pytestmark = pytest.mark.redis


async def replicas(make_gateway: MakeGateway, url: str, **overrides: Any) -> list[Harness]:
    return [await make_gateway(redis_url=url, **overrides) for _ in range(2)]


async def test_reconnecting_to_the_other_replica_recovers_exactly_the_missed_messages(
    make_gateway: MakeGateway, private_redis: PrivateRedis
) -> None:
    one, two = await replicas(make_gateway, private_redis.url)
    alice = await one.login("alice")
    await request(alice, {"type": "subscribe", "channel": "chat:r"})
    bob_one, bob_two = await one.login("bob"), await two.login("bob")
    await publish(bob_one, "chat:r", 0)
    (first,) = await messages(alice, 1)
    assert first["offset"] == 1
    await alice.close()
    for n in range(1, 7):
        await publish(bob_one if n % 2 else bob_two, "chat:r", n)
    again = await two.login("alice")
    since = {"offset": 1, "epoch": first["epoch"]}
    reply = await request(again, {"type": "subscribe", "channel": "chat:r", "since": since})
    assert reply["recovered"] is True
    assert [(p["offset"], p["data"]) for p in reply["publications"]] == [
        (n + 1, n) for n in range(1, 7)
    ]
    await publish(bob_one, "chat:r", 7)
    assert [(m["offset"], m["data"]) for m in await messages(again, 1)] == [(8, 7)]


async def test_a_redis_flush_changes_the_epoch_and_recovery_says_no(
    make_gateway: MakeGateway, private_redis: PrivateRedis
) -> None:
    one, two = await replicas(make_gateway, private_redis.url)
    alice, bob = await one.login("alice"), await two.login("bob")
    await request(alice, {"type": "subscribe", "channel": "chat:f"})
    await publish(bob, "chat:f", 0)
    (position,) = await messages(alice, 1)
    redis = Redis.from_url(private_redis.url)
    await redis.flushall()
    await redis.aclose()
    await publish(bob, "chat:f", 1)
    fresh = await messages(alice, 1)
    assert fresh[0]["epoch"] != position["epoch"] and offsets(fresh) == [1]
    since = {"offset": 1, "epoch": position["epoch"]}
    reply = await request(
        await two.login("alice"), {"type": "subscribe", "channel": "chat:f", "since": since}
    )
    assert (reply["recovered"], reply["publications"]) == (False, [])
    assert reply["position"] == {"offset": 1, "epoch": fresh[0]["epoch"]}


async def test_an_offset_beyond_what_a_stream_holds_is_a_bad_request_not_redis_down(
    make_gateway: MakeGateway, private_redis: PrivateRedis
) -> None:
    gw = await make_gateway(redis_url=private_redis.url, max_violations=100)
    alice = await gw.login("alice")
    await publish(alice, "chat:big", 0)
    for offset in (2**63, 2**64, 10**30):
        since = {"offset": offset, "epoch": "x"}
        for kind in ("history", "subscribe"):
            reply = await request(alice, {"type": kind, "channel": "chat:big", "since": since})
            assert (reply["type"], reply["code"]) == ("error", "bad_request"), (kind, offset)
    largest = {"offset": 2**63 - 1, "epoch": "x"}
    reply = await request(alice, {"type": "history", "channel": "chat:big", "since": largest})
    assert (reply["type"], reply["recovered"]) == ("history", False)


async def test_twenty_publishers_on_two_replicas_produce_gap_free_increasing_offsets(
    make_gateway: MakeGateway, private_redis: PrivateRedis
) -> None:
    one, two = await replicas(
        make_gateway, private_redis.url, rate_per_second=10_000.0, rate_burst=10_000
    )
    watchers = [await one.login("carol"), await two.login("dave")]
    for ws in watchers:
        await request(ws, {"type": "subscribe", "channel": "chat:many"})
    publishers = [await (one if i % 2 else two).login(f"p{i}") for i in range(20)]

    async def burst(ws: Any) -> None:
        for n in range(10):
            await send(ws, {"type": "publish", "channel": "chat:many", "data": n})

    await asyncio.gather(*(burst(ws) for ws in publishers))
    for ws in watchers:
        assert offsets(await messages(ws, 200)) == list(range(1, 201))


async def test_presence_across_replicas_with_one_join_and_one_leave_per_user(
    make_gateway: MakeGateway, private_redis: PrivateRedis
) -> None:
    one, two = await replicas(make_gateway, private_redis.url)
    watcher = await one.login("carol")
    await request(watcher, {"type": "subscribe", "channel": "chat:p", "presence_events": True})
    carol = {"id": "carol", "username": "Carol"}
    assert await recv(watcher) == {"type": "join", "channel": "chat:p", "user": carol}
    tabs = [await one.login("alice"), await two.login("alice")]
    for tab in tabs:
        await request(tab, {"type": "subscribe", "channel": "chat:p"})
    alice = {"id": "alice", "username": "Alice"}
    assert await recv(watcher) == {"type": "join", "channel": "chat:p", "user": alice}
    listed = await request(await two.login("bob"), {"type": "presence", "channel": "chat:p"})
    assert listed["members"] == [
        {"user": alice, "connections": 2},
        {"user": carol, "connections": 1},
    ]
    for tab in tabs:
        await tab.close()
    assert await recv(watcher) == {"type": "leave", "channel": "chat:p", "user": alice}
    await send(watcher, {"type": "ping", "id": "last"})
    assert await recv(watcher) == {"type": "pong", "id": "last"}


async def test_presence_in_redis_asked_right_after_unsubscribed_no_longer_lists_the_socket(
    make_gateway: MakeGateway, private_redis: PrivateRedis
) -> None:
    gw = await make_gateway(redis_url=private_redis.url)
    alice = await gw.login("alice")
    await request(alice, {"type": "subscribe", "channel": "chat:p"})
    listed = await unsubscribe_then_presence(alice, "chat:p")
    assert (listed["type"], listed["members"]) == ("presence", [])


async def test_a_user_over_its_history_budget_gets_history_full_on_every_replica(
    make_gateway: MakeGateway, private_redis: PrivateRedis
) -> None:
    one, two = await replicas(
        make_gateway,
        private_redis.url,
        history_user_bytes=1_000_000,
        rate_per_second=1000.0,
        rate_burst=1000,
    )
    await over_budget(one, two)
