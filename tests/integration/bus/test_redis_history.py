"""Channel history in the real Redis: gap-free offsets across replicas, epochs, recovery."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from redis.asyncio import Redis

from shared.bus import BusOutcomeUnknown
from tests.support.delaying_proxy import DelayingProxy
from tests.support.poll import poll
from ws_service.domain.errors import HistoryFull
from ws_service.domain.history import HistoryPolicy, Position, message_cost
from ws_service.redis.client import open_redis
from ws_service.redis.history import RedisHistory

pytestmark = pytest.mark.redis
POLICY = HistoryPolicy(size=100, ttl=300)
FRAME = '{"type":"message","channel":"chat:a","data":1}'


def offsets(frames: list[str]) -> list[int]:
    return [json.loads(frame)["offset"] for frame in frames]


async def test_two_replicas_publishing_get_gap_free_offsets_in_pubsub_order(
    two_clients: tuple[Redis, Redis, str],
) -> None:
    one, two, prefix = two_clients
    topic = f"{prefix}topic"
    listener = one.pubsub()
    await listener.ssubscribe(topic)
    replicas = [RedisHistory(one, prefix=prefix), RedisHistory(two, prefix=prefix)]

    async def publisher(index: int) -> None:
        for _ in range(10):
            await replicas[index % 2].publish("chat:a", topic, FRAME, POLICY)

    await asyncio.gather(*(publisher(i) for i in range(20)))
    received: list[str] = []
    async with asyncio.timeout(5):
        while len(received) < 200:
            message = await listener.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                received.append(message["data"].decode())
    await listener.aclose()
    assert offsets(received) == list(range(1, 201))
    kept = await replicas[0].read("chat:a", None, 1000, POLICY)
    assert offsets(kept.publications) == list(range(101, 201))
    assert kept.position.offset == 200


async def test_recovery_and_its_refusals(two_clients: tuple[Redis, Redis, str]) -> None:
    one, _, prefix = two_clients
    history = RedisHistory(one, prefix=prefix)
    small = HistoryPolicy(size=3, ttl=300)
    before = (await history.read("chat:a", None, 10, small)).position
    assert before.offset == 0
    for _ in range(5):
        await history.publish("chat:a", f"{prefix}t", FRAME, small)
    start = (await history.read("chat:a", None, 0, small)).position
    assert start.offset == 5
    # Offsets 1 and 2, published after the empty read, were trimmed.
    assert (await history.read("chat:a", before, 10, small)).recovered is False
    ok = await history.read("chat:a", Position(3, start.epoch), 10, small)
    assert (ok.recovered, offsets(ok.publications)) == (True, [4, 5])
    assert (await history.read("chat:a", Position(5, start.epoch), 10, small)).recovered
    too_old = await history.read("chat:a", Position(1, start.epoch), 10, small)
    assert (too_old.recovered, too_old.publications) == (False, [])
    future = await history.read("chat:a", Position(9, start.epoch), 10, small)
    assert future.recovered is False
    other = await history.read("chat:a", Position(4, "elsewhere"), 10, small)
    assert other.recovered is False


async def test_lost_history_changes_the_epoch(two_clients: tuple[Redis, Redis, str]) -> None:
    one, _, prefix = two_clients
    history = RedisHistory(one, prefix=prefix)
    await history.publish("chat:a", f"{prefix}t", FRAME, POLICY)
    before = (await history.read("chat:a", None, 10, POLICY)).position
    await one.delete(f"{prefix}{{chat:a}}:meta")  # what a flush or a restart does to the channel
    frame = await history.publish("chat:a", f"{prefix}t", FRAME, POLICY)
    after = await history.read("chat:a", before, 10, POLICY)
    assert after.position.epoch != before.epoch
    assert json.loads(frame)["offset"] == 1
    assert after.recovered is False


async def test_expired_messages_are_not_recovered(two_clients: tuple[Redis, Redis, str]) -> None:
    one, _, prefix = two_clients
    history = RedisHistory(one, prefix=prefix)
    brief = HistoryPolicy(size=10, ttl=0.2)
    start = (await history.read("chat:a", None, 10, brief)).position
    await history.publish("chat:a", f"{prefix}t", FRAME, brief)
    keys = (f"{prefix}{{chat:a}}:log", f"{prefix}{{chat:a}}:meta")

    async def expired() -> bool:  # Redis expires the channel's log and position
        return not await one.exists(*keys)

    await poll(expired)
    result = await history.read("chat:a", start, 10, brief)
    assert result.recovered is False
    assert result.position.offset == 0  # the channel went with its last message


async def test_a_reconnect_storm_queues_for_connections_instead_of_failing(redis_url: str) -> None:
    redis = open_redis(redis_url, max_connections=4)
    prefix = f"test-hist-{uuid.uuid4().hex[:8]}:"
    history = RedisHistory(redis, prefix=prefix)
    try:
        await history.publish("chat:a", f"{prefix}t", FRAME, POLICY)
        pages = await asyncio.gather(
            *(history.read("chat:a", None, 10, POLICY) for _ in range(200))
        )
        assert {len(page.publications) for page in pages} == {1}
    finally:
        await redis.delete(f"{prefix}{{chat:a}}:meta", f"{prefix}{{chat:a}}:log")
        await redis.aclose()


async def test_a_publish_whose_reply_is_lost_is_stored_and_published_once(
    two_clients: tuple[Redis, Redis, str], proxy: DelayingProxy
) -> None:
    direct, _, prefix = two_clients
    topic = f"{prefix}topic"
    listener = direct.pubsub()
    await listener.ssubscribe(topic)
    await listener.get_message(timeout=1)  # the subscribe confirmation
    redis = open_redis(proxy.url, timeout=0.3)
    history = RedisHistory(redis, prefix=prefix)
    try:
        await history.publish("chat:warm", f"{prefix}other", FRAME, POLICY)  # script and connection
        proxy.hold_replies(1)
        framed = await history.publish("chat:a", topic, FRAME, POLICY)
        assert proxy.held == 1
        assert json.loads(framed)["offset"] == 1
        assert await direct.xlen(f"{prefix}{{chat:a}}:log") == 1
        assert int(await direct.hget(f"{prefix}{{chat:a}}:meta", "offset")) == 1
        await direct.spublish(topic, "after")
        received = []
        async with asyncio.timeout(5):
            while not received or received[-1] != b"after":
                message = await listener.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    received.append(message["data"])
        assert received == [framed.encode(), b"after"]
    finally:
        await listener.aclose()
        await redis.aclose()


async def test_a_publish_redis_never_confirms_is_reported_as_such_and_stored_once(
    two_clients: tuple[Redis, Redis, str], proxy: DelayingProxy
) -> None:
    direct, _, prefix = two_clients
    redis = open_redis(proxy.url, timeout=0.3)
    history = RedisHistory(redis, prefix=prefix)
    try:
        await history.publish("chat:warm", f"{prefix}t", FRAME, POLICY)
        proxy.hold_replies(100)
        with pytest.raises(BusOutcomeUnknown):
            await history.publish("chat:a", f"{prefix}t", FRAME, POLICY)
        assert proxy.held >= 2  # it was retried, and every retry found the first result
        assert await direct.xlen(f"{prefix}{{chat:a}}:log") == 1
    finally:
        await redis.aclose()


async def test_every_read_fetches_at_most_what_it_returns(
    two_clients: tuple[Redis, Redis, str], proxy: DelayingProxy
) -> None:
    _, _, prefix = two_clients
    redis = open_redis(proxy.url)
    history = RedisHistory(redis, prefix=prefix)
    big = json.dumps({"type": "message", "channel": "chat:a", "data": "x" * 1000})
    try:
        for _ in range(100):
            await history.publish("chat:a", f"{prefix}t", big, POLICY)
        epoch = (await history.read("chat:a", None, 0, POLICY)).position.epoch
        for since, limit, expected in [
            (None, 2, [99, 100]),
            (Position(10, epoch), 2, [11, 12]),
            (Position(10, epoch), 0, []),
        ]:
            before = proxy.reply_bytes
            page = await history.read("chat:a", since, limit, POLICY)
            assert offsets(page.publications) == expected
            assert proxy.reply_bytes - before < 3 * len(big)
    finally:
        await redis.aclose()


async def test_reads_of_channels_without_history_leave_nothing_in_redis(
    two_clients: tuple[Redis, Redis, str],
) -> None:
    one, _, prefix = two_clients
    history = RedisHistory(one, prefix=prefix)
    for n in range(200):
        since = None if n % 2 else Position(n, "x")
        empty = await history.read(f"chat:e{n}", since, 0, POLICY)
        assert (empty.position.offset, empty.publications) == (0, [])
    assert [key async for key in one.scan_iter(f"{prefix}*")] == []


async def test_a_position_read_before_the_first_message_recovers_it(
    two_clients: tuple[Redis, Redis, str],
) -> None:
    one, two, prefix = two_clients
    mark = (await RedisHistory(one, prefix=prefix).read("chat:a", None, 10, POLICY)).position
    other_replica = RedisHistory(two, prefix=prefix)
    for _ in range(2):
        await other_replica.publish("chat:a", f"{prefix}t", FRAME, POLICY)
    result = await other_replica.read("chat:a", mark, 10, POLICY)
    assert (result.recovered, offsets(result.publications)) == (True, [1, 2])


def sized(n: int) -> str:
    return json.dumps({"type": "message", "channel": "chat:x", "data": "x" * n})


async def test_what_a_user_stores_is_capped_across_replicas_and_server_publishes_are_not(
    two_clients: tuple[Redis, Redis, str],
) -> None:
    one, two, prefix = two_clients
    replicas = [RedisHistory(r, prefix=prefix, user_bytes=100_000) for r in (one, two)]
    frame = sized(10_000)
    outcomes = await asyncio.gather(
        *(
            replicas[n % 2].publish(f"chat:m{n}", f"{prefix}t", frame, POLICY, owner="mallory")
            for n in range(40)
        ),
        return_exceptions=True,
    )
    stored = [n for n, outcome in enumerate(outcomes) if isinstance(outcome, str)]
    assert len(stored) == 100_000 // message_cost(frame)
    assert all(isinstance(outcomes[n], HistoryFull) for n in set(range(40)) - set(stored))
    for n in set(range(40)) - set(stored):  # a refused publish stored nothing
        assert await one.exists(f"{prefix}{{chat:m{n}}}:meta", f"{prefix}{{chat:m{n}}}:log") == 0
    assert int(await one.get(f"{prefix}{{u:mallory}}:bytes")) == len(stored) * message_cost(frame)
    await replicas[0].publish("chat:m0", f"{prefix}t", frame, POLICY)  # the server: not charged
    await replicas[1].publish("chat:m0", f"{prefix}t", frame, POLICY, owner="alice")


async def test_a_charge_ends_when_its_message_expires(
    two_clients: tuple[Redis, Redis, str],
) -> None:
    one, _, prefix = two_clients
    history = RedisHistory(one, prefix=prefix, user_bytes=30_000)
    brief = HistoryPolicy(size=10, ttl=0.2)
    frame = sized(10_000)
    for n in range(2):
        await history.publish(f"chat:b{n}", f"{prefix}t", frame, brief, owner="bob")
    with pytest.raises(HistoryFull):
        await history.publish("chat:b2", f"{prefix}t", frame, brief, owner="bob")
    async with asyncio.timeout(5):
        while True:
            try:
                await history.publish("chat:b2", f"{prefix}t", frame, brief, owner="bob")
                break
            except HistoryFull:
                await asyncio.sleep(0.05)
    assert int(await one.get(f"{prefix}{{u:bob}}:bytes")) == message_cost(frame)


async def test_everything_a_publish_stores_lives_no_longer_than_its_ttl(
    two_clients: tuple[Redis, Redis, str],
) -> None:
    one, _, prefix = two_clients
    history = RedisHistory(one, prefix=prefix, user_bytes=100_000)
    await history.publish("chat:a", f"{prefix}t", FRAME, POLICY, owner="carol")
    ttl_ms = int(POLICY.ttl * 1000)
    keys = [key async for key in one.scan_iter(f"{prefix}*")]
    assert len(keys) == 5  # meta, log, result; the user's charges and total
    for key in keys:
        assert 0 < await one.pttl(key) <= ttl_ms, key


async def test_a_charge_whose_reply_is_lost_counts_once(
    two_clients: tuple[Redis, Redis, str], proxy: DelayingProxy
) -> None:
    direct, _, prefix = two_clients
    redis = open_redis(proxy.url, timeout=0.3)
    history = RedisHistory(redis, prefix=prefix, user_bytes=100_000)
    try:
        await history.publish("chat:warm", f"{prefix}t", FRAME, POLICY, owner="dave")
        proxy.hold_replies(1)  # the next reply is the charge's
        await history.publish("chat:a", f"{prefix}t", FRAME, POLICY, owner="dave")
        assert proxy.held == 1
        assert int(await direct.get(f"{prefix}{{u:dave}}:bytes")) == 2 * message_cost(FRAME)
    finally:
        await redis.aclose()


async def test_a_read_brings_out_of_redis_no_more_than_its_byte_budget(
    two_clients: tuple[Redis, Redis, str],
) -> None:
    """A channel keeps up to its size times the message limit (6.4 MB by default): every
    subscribe and history request read all of it out of Redis, to answer a position or 256 KiB.
    The script now stops at the budget, and the page says whether it reached the position."""
    one, _, prefix = two_clients
    history = RedisHistory(one, prefix=prefix)
    big = json.dumps({"type": "message", "channel": "chat:a", "data": "x" * 5000})
    for _ in range(20):
        await history.publish("chat:a", f"{prefix}t", big, POLICY)

    async def sent_by_redis() -> int:
        return int((await one.info("stats"))["total_net_output_bytes"])

    before = await sent_by_redis()
    everything = await history.read("chat:a", None, 100, POLICY)
    unbounded = await sent_by_redis() - before
    assert len(everything.publications) == 20 and unbounded > 100_000
    before = await sent_by_redis()
    recent = await history.read("chat:a", None, 100, POLICY, 12_000)
    assert await sent_by_redis() - before < 20_000
    assert offsets(recent.publications) == [19, 20]
    epoch = recent.position.epoch
    oldest = await history.read("chat:a", Position(0, epoch), 100, POLICY, 12_000)
    assert (offsets(oldest.publications), oldest.recovered, oldest.complete) == (
        [1, 2],
        True,
        False,
    )
    last = await history.read("chat:a", Position(18, epoch), 100, POLICY, 12_000)
    assert (offsets(last.publications), last.complete) == ([19, 20], True)
    # The budget counts the frames the reply carries, exactly, as the embedded backend does (the
    # script also counted each entry's timestamp: a recovery that fit read as incomplete).
    exact = 2 * len(everything.publications[-1])
    fits = await history.read("chat:a", Position(18, epoch), 100, POLICY, exact)
    assert (offsets(fits.publications), fits.complete) == ([19, 20], True)
    short = await history.read("chat:a", Position(18, epoch), 100, POLICY, exact - 1)
    assert (offsets(short.publications), short.complete) == ([19], False)
    position_only = await history.read("chat:a", None, 0, POLICY, 12_000)
    assert (position_only.publications, position_only.position.offset) == ([], 20)
