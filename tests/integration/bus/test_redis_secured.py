"""A Sentinel group and a Cluster that want TLS and passwords, as managed Redis offerings and
common charts run them: TLS on every port, a password on the data nodes, another on the
Sentinels (``requirepass`` in sentinel.conf). The bus, the revocation ledger and a plain client
work through ``rediss+sentinel://`` and ``rediss+cluster://``, a Sentinel failover included, and a
URL without the Sentinels' password is refused by them rather than silently passing."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import RedisError

from realtime_gateway_protocol.access_token import TokenRef
from realtime_gateway_protocol.events import SessionRevoked
from shared.redis.bus import RedisBus
from shared.redis.connect import open_client, parse_redis_url
from shared.redis.ledger import RedisRevocationLedger
from tests.integration.bus.support import Inbox
from tests.support.redis_ha import (
    LocalCluster,
    LocalSentinel,
    Secured,
    local_cluster,
    local_sentinel,
)
from ws_service.domain.hub import channel_topic

pytestmark = pytest.mark.redis


@pytest.fixture
def secured_sentinel(tmp_path: Path) -> Iterator[LocalSentinel]:
    secured = Secured(tmp_path, password="data-pw", sentinel_password="sentinel-pw")
    with local_sentinel(tmp_path, secured) as group:
        yield group


@pytest.fixture
def secured_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path, secured=Secured(tmp_path, password="data-pw")) as cluster:
        yield cluster


async def _ledger_round_trip(url: str, count: int = 5) -> list[str]:
    ledger = RedisRevocationLedger(url)
    try:
        now = int(time.time())
        sids = [uuid.uuid4().hex for _ in range(count)]
        for sid in sids:
            await ledger.record(SessionRevoked(sid=sid, sub="u", until=now + 60))
        assert await ledger.revoked([TokenRef(sid, "u", now) for sid in sids]) == [True] * count
        assert await ledger.revoked([TokenRef(uuid.uuid4().hex, "u", now)]) == [False]
    finally:
        await ledger.close()
    return sids


async def test_the_bus_and_the_ledger_work_over_tls_with_both_passwords_through_a_failover(
    secured_sentinel: LocalSentinel,
) -> None:
    url = secured_sentinel.url
    assert url.startswith("rediss+sentinel://:data-pw@") and "sentinel_password=" in url
    bus = RedisBus(url, backoff_base=0.05, backoff_cap=0.5, ping_interval=0.5)
    await bus.start()
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    inbox = Inbox()
    topic = channel_topic("chat:tls")
    bus.add_reconnect_listener(on_reconnect)
    bus.subscribe(topic, inbox)
    try:
        async with asyncio.timeout(30):
            await bus.wait_synced()
        sids = await _ledger_round_trip(url)
        await bus.publish(topic, "before")
        assert await inbox.next() == (topic, "before")

        old = secured_sentinel.master()
        old.kill()
        await asyncio.to_thread(secured_sentinel.wait_failover, old)
        async with asyncio.timeout(30):
            await reconnected.wait()
            await bus.wait_synced()
        await bus.publish(topic, "after the failover")
        assert await inbox.next() == (topic, "after the failover")
        ledger = RedisRevocationLedger(url)
        try:
            now = int(time.time())
            assert await ledger.revoked([TokenRef(s, "u", now) for s in sids]) == [True] * 5
        finally:
            await ledger.close()
    finally:
        await bus.close()


async def test_without_the_sentinels_password_the_sentinels_refuse(
    secured_sentinel: LocalSentinel,
) -> None:
    good = secured_sentinel.url
    target = parse_redis_url(good)
    assert target.sentinel_password == "sentinel-pw" and target.password == "data-pw"
    client = open_client(good, timeout=2)
    try:
        assert await client.ping()
    finally:
        await client.aclose()
    for bad in (
        good.replace("sentinel_password=sentinel-pw&", ""),
        good.replace("sentinel_password=sentinel-pw", "sentinel_password=wrong"),
    ):
        assert bad != good
        client = open_client(bad, timeout=2)
        try:
            with pytest.raises(RedisError):
                await client.ping()
        finally:
            await client.aclose()
    logs = "".join(node.log.read_text() for node in secured_sentinel.sentinels)
    assert "sentinel-pw" not in logs


async def test_the_bus_and_the_ledger_work_on_a_cluster_over_tls(
    secured_cluster: LocalCluster,
) -> None:
    url = secured_cluster.url
    assert url.startswith("rediss+cluster://:data-pw@")
    bus = RedisBus(url, backoff_base=0.05, backoff_cap=0.5, ping_interval=0.5)
    await bus.start()
    inbox = Inbox()
    topics = [channel_topic(f"chat:tls-{i}") for i in range(6)]  # spread over the shards
    for topic in [*topics, "control.test"]:
        bus.subscribe(topic, inbox)
    try:
        async with asyncio.timeout(30):
            await bus.wait_synced()
        await _ledger_round_trip(url)
        for topic in [*topics, "control.test"]:
            await bus.publish(topic, f"to {topic}")
        got = {await inbox.next() for _ in range(len(topics) + 1)}
        assert got == {(topic, f"to {topic}") for topic in [*topics, "control.test"]}
    finally:
        await bus.close()
