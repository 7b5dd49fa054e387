"""Presence on the real Redis: members across replicas, join/leave once per user, expiry of the dead."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from shared.bus import InProcessBus
from ws_service.domain.history import MemoryHistory
from ws_service.domain.hub import Hub
from ws_service.domain.namespaces import Namespace, Namespaces
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


class _Socket:
    def deliver(self, channel: str, text: str, position: object) -> None:
        pass


async def test_entries_swept_while_their_replica_stalled_are_added_back(
    two_clients: tuple[Redis, Redis, str],
) -> None:
    """A replica paused longer than its entries live (8.5 s in an outside probe: a GC or VM
    pause) but not long enough for its bus to reconnect: another replica swept its entries and
    announced its users' leave, and the refresh, extending only the entries still there, never
    brought them back: users connected and subscribed stayed absent for good."""
    one, two, prefix = two_clients
    channel = f"chat:{uuid.uuid4().hex[:8]}"
    bus = InProcessBus()
    hub = Hub(
        bus,
        MemoryHistory(bus.publish),
        RedisPresence(one, prefix=prefix),
        Namespaces([Namespace("chat", presence=True)]),
    )
    socket = _Socket()
    hub.join(channel, socket)
    await hub.track(channel, socket, ALICE)
    other = RedisPresence(two, prefix=prefix)
    [key] = await one.hkeys(f"{prefix}{{{channel}}}:conns")
    entry = key.decode() if isinstance(key, bytes) else key
    await other.remove(channel, entry, ALICE)  # the sweep of an expired entry
    assert await other.members(channel) == []
    await hub.refresh_presence()
    assert await other.members(channel) == [(ALICE, 1)]
    hub.leave(channel, socket)
    await hub.close()
    assert await other.members(channel) == []


async def test_entries_lapsed_by_a_stall_are_added_back_in_a_few_round_trips(
    two_clients: tuple[Redis, Redis, str],
) -> None:
    """One add per lost entry in turn (two round trips each: 5 s for 10,000 entries on a local
    Redis, longer over a network) took longer than an entry lives: the first ones added back
    lapsed before the next refresh, were swept, and were added back again, leaves and joins
    announced for thousands of users at every refresh, with no end (an inside probe: 3,000
    entries at WS_PRESENCE_TTL 1.5 s); the slot refresh and the replica's registration waited
    behind it."""
    one, two, prefix = two_clients
    channels = [f"chat:{uuid.uuid4().hex[:8]}" for _ in range(20)]
    bus = InProcessBus()
    hub = Hub(
        bus,
        MemoryHistory(bus.publish),
        RedisPresence(one, prefix=prefix),
        Namespaces([Namespace("chat", presence=True)]),
    )
    sockets = [_Socket() for _ in range(300)]
    for i, socket in enumerate(sockets):
        channel = channels[i % len(channels)]
        hub.join(channel, socket)
        await hub.track(channel, socket, Member(f"u{i}", f"user {i}"))
    for channel in channels:  # all lapsed and swept while this replica stalled
        await two.delete(*(f"{prefix}{{{channel}}}:{kind}" for kind in ("conns", "exp", "users")))
    trips = 0
    execute, pipeline = one.execute_command, one.pipeline

    async def counted(*args: object, **kwargs: object) -> object:
        nonlocal trips
        trips += 1
        return await execute(*args, **kwargs)

    def counted_pipeline(*args: object, **kwargs: object) -> object:
        nonlocal trips
        trips += 1
        return pipeline(*args, **kwargs)

    one.execute_command = counted  # type: ignore[method-assign]
    one.pipeline = counted_pipeline  # type: ignore[method-assign,assignment]
    await hub.refresh_presence()
    one.execute_command, one.pipeline = execute, pipeline  # type: ignore[method-assign]
    other = RedisPresence(two, prefix=prefix)
    present = [await other.members(channel) for channel in channels]
    assert sum(count for members in present for _, count in members) == 300
    assert trips <= 10, f"{trips} round trips to add 300 entries back"
    for socket in sockets:
        for channel in channels:
            hub.leave(channel, socket)
    await hub.close()


async def test_a_replica_whose_clock_is_ahead_sweeps_no_live_entry_of_another(
    two_clients: tuple[Redis, Redis, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Expiries were written and swept on each replica's own clock: one 4 s ahead (less than
    WS_LEEWAY) swept the live entries of the others at every refresh, and their users left and
    joined again each time, without end (an outside probe: WS_PRESENCE_TTL 6, 11 leaves and
    joins in 20 s of a user who never moved). The per-user slots use Redis's clock already."""
    one, two, prefix = two_clients
    channel = f"chat:{uuid.uuid4().hex[:8]}"
    reported: list[tuple[str, Member]] = []

    def report(kind: str | bytes, channel: str, member: Member) -> None:
        reported.append((kind.decode() if isinstance(kind, bytes) else kind, member))

    right = RedisPresence(one, ttl=6, prefix=prefix)
    ahead = RedisPresence(two, ttl=6, prefix=prefix, on_transition=report)
    await right.add(channel, "r:1", ALICE)  # lives 4 s
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 4.5)
    await ahead.add(channel, "a:1", BOB)
    await ahead.refresh([(channel, ["a:1"])])
    assert await ahead.members(channel) == [(ALICE, 1), (BOB, 1)]
    assert reported == [("join", BOB)]


async def test_a_dead_replica_whose_clock_was_ahead_has_its_users_leave_in_time(
    two_clients: tuple[Redis, Redis, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lapsing index was scored on each replica's own clock, with ZADD GT: a replica a
    minute ahead indexed its channel a minute late, and once it died no survivor swept the
    channel until that minute had passed, so its users stayed present (no leave, no
    presence_leave webhook) far past WS_PRESENCE_TTL, which docs/configuration.md promises."""
    one, two, prefix = two_clients
    channel = f"chat:{uuid.uuid4().hex[:8]}"
    reported: list[tuple[str, Member]] = []

    def report(kind: str | bytes, channel: str, member: Member) -> None:
        reported.append((kind.decode() if isinstance(kind, bytes) else kind, member))

    real = time.time
    ahead = RedisPresence(two, ttl=1.5, prefix=prefix)  # an entry lives 1 s
    survivor = RedisPresence(one, ttl=1.5, prefix=prefix, on_transition=report)
    monkeypatch.setattr(time, "time", lambda: real() + 60)
    await ahead.add(channel, "a:1", BOB)  # and then its replica dies
    monkeypatch.setattr(time, "time", real)
    await asyncio.sleep(1.2)
    await survivor.refresh([])  # the survivor holds no entry in the channel: only the index
    assert reported == [("leave", BOB)]
