"""The per-user connection cap on the real Redis: atomic across replicas, refreshed by the replica
holding it, lapsing when that replica is gone, restored after Redis lost it."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from realtime_gateway_protocol.access_token import Claims
from tests.unit.ws.fakes import FakePeer, build_gateway
from ws_service.redis.slots import RedisUserSlots

pytestmark = pytest.mark.redis
TTL = 0.6
"""Slots live two thirds of it: 400 ms."""


async def test_concurrent_acquires_on_two_replicas_take_exactly_the_limit(
    two_clients: tuple[Redis, Redis, str],
) -> None:
    one, two, prefix = two_clients
    sizes: list[int] = []
    a = RedisUserSlots(one, prefix=prefix, on_batch=sizes.append)
    b = RedisUserSlots(two, prefix=prefix, on_batch=sizes.append)
    user = uuid.uuid4().hex
    replicas = {"a": a, "b": b}
    taken = await asyncio.gather(
        *(
            slots.acquire(user, f"{name}:{i}", 5)
            for i in range(20)
            for name, slots in replicas.items()
        )
    )
    assert taken.count(True) == 5
    assert sorted(sizes) == [20, 20], "each replica's acquires share one round trip"
    assert await one.zcard(f"{prefix}{{{user}}}") == 5
    assert await a.acquire(user, "a:0", 5) == taken[0], "a retried acquire is the same slot"


async def test_a_released_slot_is_free_for_another_replica(
    two_clients: tuple[Redis, Redis, str],
) -> None:
    one, two, prefix = two_clients
    a, b = RedisUserSlots(one, prefix=prefix), RedisUserSlots(two, prefix=prefix)
    assert await a.acquire("u", "a:1", 1)
    assert not await b.acquire("u", "b:1", 1)
    await a.release("u", "a:1")
    assert await b.acquire("u", "b:1", 1)


async def test_slots_lapse_unless_refreshed_and_a_released_one_is_not_refreshed_back(
    two_clients: tuple[Redis, Redis, str],
) -> None:
    one, two, prefix = two_clients
    live = RedisUserSlots(one, ttl=TTL, prefix=prefix)
    dead = RedisUserSlots(two, ttl=TTL, prefix=prefix)
    assert await live.acquire("u", "live:1", 3)
    assert await live.acquire("u", "live:2", 3)
    assert await dead.acquire("u", "dead:1", 3)
    await live.release("u", "live:2")
    key = f"{prefix}{{u}}"
    # Only the live replica refreshes: the dead one's slot lapses, and live:1 (taken before it)
    # outlives it; live:2, released, is not refreshed back.
    async with asyncio.timeout(5):
        while await one.zscore(key, "dead:1") is not None:
            await live.refresh([("u", ["live:1", "live:2"])])
            await asyncio.sleep(TTL / 6)
    assert await one.zrange(key, 0, -1) == [b"live:1"]
    assert not await dead.acquire("u", "dead:2", 1)


async def test_restore_takes_slots_back_past_the_limit(
    two_clients: tuple[Redis, Redis, str],
) -> None:
    one, _, prefix = two_clients
    slots = RedisUserSlots(one, prefix=prefix)
    assert await slots.acquire("u", "x:1", 1)
    await one.delete(f"{prefix}{{u}}")  # as a Redis restart would
    await slots.restore([("u", ["x:1", "x:2"])])
    assert sorted(await one.zrange(f"{prefix}{{u}}", 0, -1)) == [b"x:1", b"x:2"]
    assert not await slots.acquire("u", "x:3", 2)
    assert await one.pttl(f"{prefix}{{u}}") > 0


async def test_slots_that_lapsed_while_their_replica_stalled_are_held_again(
    two_clients: tuple[Redis, Redis, str],
) -> None:
    """A replica paused longer than a slot lives (8.5 s in an outside probe: a GC or VM pause)
    but not long enough for its bus to reconnect: another replica swept its slots, and the
    refresh, extending only the slots still there, never brought them back: its open sockets
    stopped counting against WS_MAX_CONNECTIONS_PER_USER for good."""
    one, _, prefix = two_clients
    gateway = build_gateway(slots=RedisUserSlots(one, prefix=prefix))
    conn = gateway.connect(FakePeer(), "203.0.113.1")
    await conn.authenticated_at_handshake(
        Claims("alice", "s1", 1_800_000_000, 1_900_000_000, frozenset(), None, "k")
    )
    key = f"{prefix}{{alice}}"
    assert await one.zcard(key) == 1
    await one.delete(key)  # lapsed, and swept by another replica's acquire
    await gateway.refresh_slots()
    assert await one.zcard(key) == 1, "another replica would admit a socket over the cap"
    assert not conn.closing


class HeldAcquire(RedisUserSlots):
    """Its acquisitions wait for ``gate`` (a slow round trip, a batch ahead of them)."""

    def __init__(self, redis: Redis, **kwargs: Any) -> None:
        super().__init__(redis, **kwargs)
        self.asked = asyncio.Event()
        self.gate = asyncio.Event()

    async def acquire(self, user: str, slot: str, limit: int) -> bool:
        self.asked.set()
        await self.gate.wait()
        return await super().acquire(user, slot, limit)


async def test_a_refresh_while_a_slot_is_asked_for_does_not_pass_the_cap(
    two_clients: tuple[Redis, Redis, str],
) -> None:
    """The refresh found the slot of a socket still being admitted missing (its acquisition was
    out) and restored it past the cap; the acquisition then found it there and took it: the user
    held one socket over WS_MAX_CONNECTIONS_PER_USER, for good (an inside probe)."""
    one, two, prefix = two_clients
    user = uuid.uuid4().hex[:8]
    other = RedisUserSlots(two, prefix=prefix)
    assert await other.acquire(user, "elsewhere:1", 1)  # another replica holds the one slot
    slots = HeldAcquire(one, prefix=prefix)
    gateway = build_gateway(slots=slots, max_connections_per_user=1)
    conn = gateway.connect(FakePeer(), "203.0.113.1")
    task = asyncio.create_task(
        conn.authenticated_at_handshake(
            Claims(user, "s1", 1_800_000_000, 1_900_000_000, frozenset(), None, "k")
        )
    )
    await slots.asked.wait()  # the acquisition is out (a round trip, a batch ahead of it)
    await gateway.refresh_slots()  # the periodic refresh lands meanwhile
    slots.gate.set()
    await task
    key = f"{prefix}{{{user}}}"
    assert await one.zcard(key) == 1, "the user passed WS_MAX_CONNECTIONS_PER_USER"
    assert conn.closing
