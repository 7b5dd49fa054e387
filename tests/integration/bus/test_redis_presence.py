"""Presence on the real Redis: members across replicas, join/leave once per user, expiry of the dead."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from ws_service.domain.presence import Member, presence_topic
from ws_service.redis.presence import RedisPresence

pytestmark = pytest.mark.redis
ALICE, BOB = Member("u1", "alice"), Member("u2", "bob")


async def events(listener: object, count: int) -> list[dict[str, object]]:
    received: list[dict[str, object]] = []
    async with asyncio.timeout(5):
        while len(received) < count:
            message = await listener.get_message(ignore_subscribe_messages=True, timeout=1)  # type: ignore[attr-defined]
            if message is not None:
                received.append(json.loads(message["data"]))
    return received


async def test_members_across_replicas_and_one_join_per_user(
    two_clients: tuple[Redis, Redis, str],
) -> None:
    one, two, prefix = two_clients
    channel = f"chat:{uuid.uuid4().hex[:8]}"
    listener = one.pubsub()
    await listener.ssubscribe(presence_topic(channel))
    a, b = RedisPresence(one, prefix=prefix), RedisPresence(two, prefix=prefix)
    # Alice's two tabs on two replicas at once, and Bob on one.
    await asyncio.gather(a.add(channel, "a:1", ALICE), b.add(channel, "b:1", ALICE))
    await b.add(channel, "b:2", BOB)
    assert await a.members(channel) == [(ALICE, 2), (BOB, 1)]
    await a.remove(channel, "a:1", ALICE)  # one tab left: not a leave
    await b.remove(channel, "b:2", BOB)
    await b.remove(channel, "b:1", ALICE)
    got = await events(listener, 4)
    await listener.aclose()
    assert [(e["type"], e["user"]) for e in got] == [
        ("join", {"id": "u1", "username": "alice"}),
        ("join", {"id": "u2", "username": "bob"}),
        ("leave", {"id": "u2", "username": "bob"}),
        ("leave", {"id": "u1", "username": "alice"}),
    ]
    assert all(e["channel"] == channel for e in got)
    assert await a.members(channel) == []


@contextlib.asynccontextmanager
async def refreshing(
    presence: RedisPresence, entries: list[tuple[str, list[str]]]
) -> AsyncIterator[None]:
    """A live replica refreshing ``entries`` every third of the lifetime, as ws_service does."""

    async def keep_refreshing() -> None:
        while True:
            await asyncio.sleep(0.5 / 3)
            await presence.refresh(entries)

    refresher = asyncio.ensure_future(keep_refreshing())
    try:
        yield
    finally:
        refresher.cancel()


async def test_a_dead_replicas_users_expire_and_leave(
    two_clients: tuple[Redis, Redis, str],
) -> None:
    one, two, prefix = two_clients
    channel = f"chat:{uuid.uuid4().hex[:8]}"
    alive = RedisPresence(one, ttl=0.5, prefix=prefix)
    dead = RedisPresence(two, ttl=0.5, prefix=prefix)
    await alive.add(channel, "a:1", ALICE)
    await dead.add(channel, "d:1", BOB)
    listener = one.pubsub()
    await listener.ssubscribe(presence_topic(channel))

    async with refreshing(alive, [(channel, ["a:1"])]):
        async with asyncio.timeout(5):
            got = await events(listener, 1)  # the dead replica's entry lapses: bob leaves
        assert await alive.members(channel) == [(ALICE, 1)]
    await listener.aclose()
    assert (got[0]["type"], got[0]["user"]) == ("leave", {"id": "u2", "username": "bob"})


async def test_a_dead_replicas_last_member_leaves_where_no_live_replica_has_one(
    two_clients: tuple[Redis, Redis, str],
) -> None:
    """The only member of a channel was on a replica that died, and no live replica has a socket
    there to refresh or read it: the entry lapsed unswept, its keys expired a minute later, and
    the ``presence_leave`` webhook (docs/rest.md: "still comes, once presence lapses") never came
    (an outside probe, two replicas, one SIGKILLed). Every replica's periodic refresh now also
    sweeps the channels whose entries have all lapsed, whoever holds them."""
    one, two, prefix = two_clients
    channel = f"chat:{uuid.uuid4().hex[:8]}"
    reported: list[tuple[str, str, Member]] = []

    def report(kind: str | bytes, channel: str, member: Member) -> None:
        reported.append((kind.decode() if isinstance(kind, bytes) else kind, channel, member))

    alive = RedisPresence(one, ttl=0.5, prefix=prefix, on_transition=report)
    dead = RedisPresence(two, ttl=0.5, prefix=prefix)
    await dead.add(channel, "d:1", BOB)
    listener = one.pubsub()
    await listener.ssubscribe(presence_topic(channel))

    async with refreshing(alive, []):  # its own entries: none in this channel
        got = await events(listener, 1)
    await listener.aclose()
    assert (got[0]["type"], got[0]["user"]) == ("leave", {"id": "u2", "username": "bob"})
    assert reported == [("leave", channel, BOB)]
    assert await alive.members(channel) == []
    assert await one.zcard(f"{prefix}lapsing") == 0, "a channel swept empty is not kept"
