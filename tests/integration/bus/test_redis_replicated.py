"""Writes that must survive a failover, on a master with a replica: a revocation record and a
history message reach the replica before anyone is told (``WAIT``), a history message is
delivered only then, and a lone server pays nothing for it. Then the whole thing behind real
Sentinels: the master is killed, and the bus, the ledger and the history carry on from the
promoted replica with nothing lost."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from realtime_gateway_protocol.access_token import TokenRef
from realtime_gateway_protocol.events import SessionRevoked
from shared.redis.bus import RedisBus
from shared.redis.ledger import RedisRevocationLedger
from shared.redis.write import write
from tests.integration.bus.support import Inbox, PrivateRedis, command_calls
from tests.support.poll import poll
from tests.support.redis_ha import LocalSentinel, local_sentinel
from ws_service.domain.history import HistoryPolicy
from ws_service.domain.hub import channel_topic
from ws_service.redis.client import open_redis
from ws_service.redis.history import _DELIVER, _PUBLISH, RESULT_TTL_MS, RedisHistory

pytestmark = pytest.mark.redis
POLICY = HistoryPolicy(size=100, ttl=300)


@pytest.fixture
async def replicated(redis_server_binary: str) -> AsyncIterator[tuple[PrivateRedis, PrivateRedis]]:
    """A master and its replica, in sync."""
    master = PrivateRedis(redis_server_binary)
    await master.start()
    replica = PrivateRedis(redis_server_binary, "--replicaof", "127.0.0.1", str(master.port))
    await replica.start()
    client = Redis.from_url(replica.url, decode_responses=True)

    async def in_sync() -> bool:
        return (await client.info("replication"))["master_link_status"] == "up"

    try:
        await poll(in_sync, within=10)
        yield master, replica
    finally:
        await client.aclose()
        await replica.kill()
        await master.kill()


async def waits(url: str) -> int:
    return (await command_calls(url)).get("wait", 0)


async def test_durable_writes_wait_for_the_replica_and_a_lone_server_never_waits(
    replicated: tuple[PrivateRedis, PrivateRedis], private_redis: PrivateRedis
) -> None:
    now = int(time.time())
    for url, expected in ((replicated[0].url, 2), (private_redis.url, 0)):
        ledger = RedisRevocationLedger(url)
        redis = open_redis(url)
        try:
            await ledger.record(SessionRevoked(sid=uuid.uuid4().hex, sub="u", until=now + 60))
            frame = '{"type":"message","channel":"chat:a","data":1}'
            await RedisHistory(redis).publish("chat:a", channel_topic("chat:a"), frame, POLICY)
        finally:
            await ledger.close()
            await redis.aclose()
        assert await waits(url) == expected, url


async def test_a_user_that_may_not_run_info_writes_without_waiting(
    replicated: tuple[PrivateRedis, PrivateRedis],
) -> None:
    master = replicated[0]
    admin = Redis.from_url(master.url)
    await admin.execute_command(
        "ACL", "SETUSER", "app", "on", ">app-pw", "~*", "&*", "+@all", "-info"
    )
    await admin.aclose()
    url = f"redis://app:app-pw@127.0.0.1:{master.port}/0"
    ledger = RedisRevocationLedger(url)
    try:
        sid = uuid.uuid4().hex
        await ledger.record(SessionRevoked(sid=sid, sub="u", until=int(time.time()) + 60))
        assert await ledger.revoked([TokenRef(sid, "u", 0)]) == [True]
    finally:
        await ledger.close()
    assert await waits(master.url) == 0


async def test_a_history_message_is_delivered_only_once_kept_for_the_replica(
    replicated: tuple[PrivateRedis, PrivateRedis],
) -> None:
    master = replicated[0]
    redis = open_redis(master.url)
    listener = Redis.from_url(master.url, decode_responses=True).pubsub()
    channel, topic = "chat:a", channel_topic("chat:a")
    history = RedisHistory(redis)
    try:
        await listener.ssubscribe(topic)
        assert (await listener.get_message(timeout=5))["type"] == "ssubscribe"
        keys = [f"hist:{{{channel}}}:meta", f"hist:{{{channel}}}:log"]
        frame = '{"type":"message","channel":"chat:a","data":1}'
        message, pending, offset, epoch = await _PUBLISH(
            redis, [*keys, "hist:{chat:a}:pub:1"],
            [frame, 100, 300_000, topic, "e1", RESULT_TTL_MS], idempotent=True,
        )  # fmt: skip
        assert int(pending) == 1
        assert (await history.read(channel, None, 10, POLICY)).position.offset == 0
        await write(redis, "SPUBLISH", topic, "marker", idempotent=False, key=topic)
        assert (await listener.get_message(timeout=5))["data"] == "marker", "not delivered yet"

        await _DELIVER(redis, keys, [epoch, offset, topic], idempotent=True)
        await _DELIVER(redis, keys, [epoch, offset, topic], idempotent=True)  # a retry
        assert (await listener.get_message(timeout=5))["data"] == message
        page = await history.read(channel, None, 10, POLICY)
        assert page.publications == [message]
        await history.publish(channel, topic, frame, POLICY)
        assert (await listener.get_message(timeout=5))["data"].endswith('"offset":2,"epoch":"e1"}')
    finally:
        await listener.aclose()
        await redis.aclose()


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[LocalSentinel]:
    with local_sentinel(tmp_path) as group:
        yield group


async def test_after_a_sentinel_failover_nothing_delivered_or_recorded_is_lost(
    sentinel_group: LocalSentinel,
) -> None:
    url = sentinel_group.url
    bus = RedisBus(url, backoff_base=0.05, backoff_cap=0.5, ping_interval=0.5)
    await bus.start()
    ledger = RedisRevocationLedger(url)
    redis = open_redis(url)
    history = RedisHistory(redis)
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    channel, topic = "chat:a", channel_topic("chat:a")
    inbox = Inbox()
    bus.add_reconnect_listener(on_reconnect)
    bus.subscribe(topic, inbox)
    bus.subscribe("control.test", inbox)
    try:
        await bus.wait_synced()
        now = int(time.time())
        sids = [uuid.uuid4().hex for _ in range(20)]
        for sid in sids:
            await ledger.record(SessionRevoked(sid=sid, sub="u", until=now + 60))
        frame = '{"type":"message","channel":"chat:a","data":1}'
        for _ in range(20):
            await history.publish(channel, topic, frame, POLICY)
        delivered = [(await inbox.next())[1] for _ in range(20)]

        old = sentinel_group.master()
        old.kill()
        async with asyncio.timeout(30):
            await reconnected.wait()
            await bus.wait_synced()

        assert await ledger.revoked([TokenRef(sid, "u", now) for sid in sids]) == [True] * 20
        page = await history.read(channel, None, 100, POLICY)
        assert page.publications == delivered
        await history.publish(channel, topic, frame, POLICY)
        assert (await inbox.next())[1].endswith(f'"offset":21,"epoch":"{page.position.epoch}"}}')
        await bus.publish("control.test", "after the failover")
        assert await inbox.next() == ("control.test", "after the failover")
    finally:
        await bus.close()
        await ledger.close()
        await redis.aclose()
