"""Every Redis user against a real Redis Cluster (three masters, a replica each): the bus's
sharded and broadcast topics, and every key family and script of the ledger, history, presence,
tickets and the per-user slots, whose keys must share a slot wherever a script touches several.
Then a master dies under the bus: its shard's topics move to the promoted replica, the other
shards never stop, and the reconnect listeners run."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio.cluster import RedisCluster

from realtime_gateway_protocol.access_token import TokenRef
from realtime_gateway_protocol.events import SessionRevoked, UserRevoked
from shared.redis import bus as bus_module
from shared.redis.bus import RedisBus
from shared.redis.ledger import RedisRevocationLedger
from shared.redis.once import RedisUsedOnce
from tests.integration.bus.support import BusMaker, Inbox
from tests.support.redis_ha import LocalCluster, local_cluster
from ws_service.domain.history import HistoryPolicy, Position
from ws_service.domain.hub import channel_topic
from ws_service.domain.presence import Member, presence_topic
from ws_service.redis.client import open_redis
from ws_service.redis.history import RedisHistory
from ws_service.redis.presence import RedisPresence
from ws_service.redis.slots import RedisUserSlots

pytestmark = pytest.mark.redis
POLICY = HistoryPolicy(size=100, ttl=300)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One cluster for the tests that leave it whole."""
    with local_cluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture
def doomed_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster of this test alone, which it may break."""
    with local_cluster(tmp_path) as started:
        yield started


def on_other_shards(cluster: LocalCluster, count: int, avoid: str) -> list[str]:
    """``count`` channels, each on a master that does not own ``avoid``'s slot, all different."""
    taken = {cluster.owner(avoid).port}
    channels = []
    while len(channels) < count:
        channel = f"chat:{uuid.uuid4().hex[:8]}"
        port = cluster.owner(channel).port
        if port not in taken:
            taken.add(port)
            channels.append(channel)
    return channels


def shard_subscribers(cluster: LocalCluster, topic: str) -> dict[int, int]:
    """Per live master, how many connections it holds subscribed to ``topic``."""
    counts = {}
    for node in cluster.nodes:
        if node.alive and node.client().info("replication")["role"] == "master":
            _, count = node.client().execute_command("PUBSUB", "SHARDNUMSUB", topic)
            counts[node.port] = int(count)
    return counts


async def test_sharded_topics_live_on_their_shard_and_broadcast_reaches_all(
    cluster: LocalCluster, make_bus: BusMaker
) -> None:
    publisher, one, two = [await make_bus(cluster.url) for _ in range(3)]
    channel = f"chat:{uuid.uuid4().hex[:8]}"
    sharded, broadcast = channel_topic(channel), f"control.{uuid.uuid4().hex}"
    inbox_one, inbox_two = Inbox(), Inbox()
    for bus, inbox in ((one, inbox_one), (two, inbox_two)):
        bus.subscribe(sharded, inbox)
        bus.subscribe(broadcast, inbox)
        await bus.wait_synced()

    await publisher.publish(sharded, "to the channel's shard")
    await publisher.publish(broadcast, "to everyone")

    for inbox in (inbox_one, inbox_two):
        got = {await inbox.next(), await inbox.next()}
        assert got == {(sharded, "to the channel's shard"), (broadcast, "to everyone")}
    owner = cluster.owner(channel).port
    assert {port: n for port, n in shard_subscribers(cluster, sharded).items() if n} == {owner: 2}


async def test_ledger_tickets_and_slots_on_a_cluster(cluster: LocalCluster) -> None:
    now = int(time.time())
    subs = [uuid.uuid4().hex for _ in range(12)]
    ledger = RedisRevocationLedger(cluster.url)
    tickets = RedisUsedOnce(cluster.url)
    client = open_redis(cluster.url)
    try:
        for sub in subs[:6]:
            await ledger.record(SessionRevoked(sid=f"s-{sub}", sub=sub, until=now + 60))
        await ledger.record(UserRevoked(sub=subs[6], issued_before=now, until=now + 60))
        refs = [TokenRef(f"s-{sub}", sub, now - 1) for sub in subs]
        assert await ledger.revoked(refs) == [True] * 7 + [False] * 5
        # Handshakes asking at once share a batch: one MGET, the ledger being one slot.
        each = await asyncio.gather(*(ledger.revoked([ref]) for ref in refs))
        assert [answer for (answer,) in each] == [True] * 7 + [False] * 5
        assert await tickets.burn(f"jti-{subs[0]}", now + 30)
        assert not await tickets.burn(f"jti-{subs[0]}", now + 30)

        sizes: list[int] = []
        slots = RedisUserSlots(client, ttl=15, on_batch=sizes.append)
        taken = await asyncio.gather(*(slots.acquire(sub, "a:1", 1) for sub in subs))
        assert taken == [True] * len(subs) and sizes == [len(subs)]
        await slots.refresh([(sub, ["a:1"]) for sub in subs])
        assert not await slots.acquire(subs[0], "b:1", 1)
        await asyncio.gather(*(slots.release(sub, "a:1") for sub in subs))
        assert await slots.acquire(subs[0], "b:1", 1)
    finally:
        await ledger.close()
        await tickets.close()
        await client.aclose()


async def test_a_shard_that_comes_back_empty_takes_the_ledgers_intact_mark_with_its_records(
    doomed_cluster: LocalCluster,
) -> None:
    """Each master in turn loses its data (FLUSHALL: a restart without persistence, its replica
    following): wherever records were lost, ``intact`` must say so, or auth_service never writes
    them again and a logged-out session's tokens are let in on replicas started since."""
    cluster = doomed_cluster
    now = int(time.time())
    refs = [TokenRef(f"s-{uuid.uuid4().hex}", uuid.uuid4().hex, now - 1) for _ in range(24)]
    ledger = RedisRevocationLedger(cluster.url)
    lost_somewhere = False
    try:
        masters = [
            node for node in cluster.nodes if node.client().info("replication")["role"] == "master"
        ]
        for master in masters:
            for ref in refs:
                await ledger.record(SessionRevoked(sid=ref.sid, sub=ref.sub, until=now + 60))
            await ledger.mark_intact()
            assert await ledger.intact()
            master.client().flushall()
            if not all(await ledger.revoked(refs)):
                lost_somewhere = True
                assert not await ledger.intact()
    finally:
        await ledger.close()
    assert lost_somewhere


async def test_history_and_presence_scripts_run_on_the_channels_shard(
    cluster: LocalCluster,
) -> None:
    channels = [f"chat:{uuid.uuid4().hex[:8]}" for _ in range(6)]
    client = open_redis(cluster.url)
    try:
        history = RedisHistory(client, user_bytes=1_000_000)
        for channel in channels:
            for n in range(3):
                frame = f'{{"type":"message","channel":"{channel}","data":{n}}}'
                await history.publish(channel, channel_topic(channel), frame, POLICY, owner="u1")
        for channel in channels:
            page = await history.read(channel, Position(1, "x"), 10, POLICY)
            assert page.position.offset == 3
            latest = await history.read(channel, None, 2, POLICY)
            assert len(latest.publications) == 2

        presence = RedisPresence(client, ttl=15)
        for channel in channels:
            await presence.add(channel, "c1", Member("u1", "alice"))
        await presence.refresh([(channel, ["c1"]) for channel in channels])
        assert await presence.members(channels[0]) == [(Member("u1", "alice"), 1)]
    finally:
        await client.aclose()


async def test_pipelined_scripts_survive_an_emptied_script_cache(cluster: LocalCluster) -> None:
    """A master promoted by a failover has no scripts loaded; redis-py's cluster pipeline does
    not load them, so the periodic refresh of presence and slots must."""
    channels = [f"chat:{uuid.uuid4().hex[:8]}" for _ in range(6)]
    client = open_redis(cluster.url)
    try:
        presence = RedisPresence(client, ttl=15)
        slots = RedisUserSlots(client, ttl=15)
        for channel in channels:
            await presence.add(channel, "c1", Member("u1", "alice"))
            await slots.acquire(channel, "c1", 5)
        for node in cluster.nodes:
            node.client().script_flush()
        await presence.refresh([(channel, ["c1"]) for channel in channels])
        await slots.refresh([(channel, ["c1"]) for channel in channels])
    finally:
        await client.aclose()


@pytest.fixture
async def quick_buses() -> AsyncIterator[BusMaker]:
    buses: list[RedisBus] = []

    async def make(url: str, **options: float) -> RedisBus:
        bus = RedisBus(url, backoff_base=0.05, backoff_cap=0.5, ping_interval=0.5, **options)
        buses.append(bus)
        await bus.start()
        return bus

    yield make
    for bus in buses:
        await bus.close()


async def test_a_dead_masters_topics_move_to_its_replica_while_other_shards_go_on(
    doomed_cluster: LocalCluster, quick_buses: BusMaker
) -> None:
    cluster = doomed_cluster
    publisher, replica = await quick_buses(cluster.url), await quick_buses(cluster.url)
    doomed = f"chat:{uuid.uuid4().hex[:8]}"
    [other] = on_other_shards(cluster, 1, doomed)
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    replica.add_reconnect_listener(on_reconnect)
    inbox = Inbox()
    for channel in (doomed, other):
        replica.subscribe(channel_topic(channel), inbox)
        replica.subscribe(presence_topic(channel), inbox)
    replica.subscribe("control.test", inbox)
    await replica.wait_synced()

    cluster.kill(cluster.owner(doomed))
    await publisher.publish(channel_topic(other), "while the other shard fails over")
    assert await inbox.next() == (channel_topic(other), "while the other shard fails over")

    async with asyncio.timeout(30):
        await reconnected.wait()
        await replica.wait_synced()
    assert replica.connected
    await asyncio.to_thread(cluster.wait_failover)
    for topic in (channel_topic(doomed), presence_topic(doomed), "control.test"):
        await publisher.publish(topic, "after")
        assert await inbox.next() == (topic, "after")
    new_owner = cluster.owner(doomed).port
    assert shard_subscribers(cluster, channel_topic(doomed))[new_owner] == 1


def test_the_cluster_routes_a_channels_topic_and_keys_to_one_slot(cluster: LocalCluster) -> None:
    client = redis.Redis(port=cluster.nodes[0].port)
    slot = client.cluster("keyslot", "hist:{chat:x}:meta")
    for key in ("hist:{chat:x}:log", "presence:{chat:x}:conns", channel_topic("chat:x")):
        assert client.cluster("keyslot", key) == slot
    assert client.cluster("keyslot", presence_topic("chat:x")) == slot


async def test_a_publish_while_its_channels_slot_migrates_waits_until_the_slot_has_moved(
    cluster: LocalCluster,
) -> None:
    """A resharding moves a channel's slot key by key: meanwhile the publish script's keys are
    split between the two nodes (``TRYAGAIN``), then gone from the owner (``ASK``), until the
    slot is handed over. The publish tried three times in 60 ms and took Redis for unreachable:
    every publish of the migration reached only its own replica's sockets and no history, with
    the bus connected throughout (an outside probe: 82 of 82 acknowledged messages during an
    11 s migration, never seen on the other replica, no gap to notice)."""
    channel = f"chat:{uuid.uuid4().hex[:8]}"
    client = open_redis(cluster.url)
    try:
        history = RedisHistory(client)
        for n in range(3):
            frame = f'{{"type":"message","channel":"{channel}","data":{n}}}'
            await history.publish(channel, channel_topic(channel), frame, POLICY)
        slot = cluster.slot(channel)
        source = cluster.owner(channel)
        target = cluster.owner(next(c for c in on_other_shards(cluster, 2, channel)))
        src, dst = source.client(), target.client()
        src_id = src.execute_command("CLUSTER", "MYID")
        dst_id = dst.execute_command("CLUSTER", "MYID")
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)

        def move(keys: list[bytes]) -> None:
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)

        keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
        move(keys[:1])  # the script's keys on both nodes: TRYAGAIN
        frame = f'{{"type":"message","channel":"{channel}","data":"during"}}'
        publishing = asyncio.create_task(
            history.publish(channel, channel_topic(channel), frame, POLICY)
        )
        await asyncio.sleep(0.4)
        assert not publishing.done(), publishing
        move(keys[1:])  # every key on the target, the slot still the source's: ASK
        await asyncio.sleep(0.4)
        assert not publishing.done(), publishing
        for node in cluster.nodes:
            if node.alive and node.client().info("replication")["role"] == "master":
                node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        async with asyncio.timeout(5):
            await publishing
        assert cluster.owner(channel).port == target.port
        page = await history.read(channel, None, 10, POLICY)
        assert page.position.offset == 4
        assert '"during"' in page.publications[-1]
    finally:
        await client.aclose()


async def test_a_slot_moved_by_a_resharding_takes_only_its_topics_off_their_masters_link(
    cluster: LocalCluster, quick_buses: BusMaker
) -> None:
    """Redis unsubscribes a moved slot's topics from the connections of its old master. The bus
    dropped that master's whole link for it and subscribed everything again, so what every other
    channel of the master got meanwhile was lost (an outside probe: five of five subscribers of a
    channel whose slot never moved closed 1012 ``missed_messages`` at the first move)."""
    publisher, replica = await quick_buses(cluster.url), await quick_buses(cluster.url)
    stays = f"chat:{uuid.uuid4().hex[:8]}"
    home = cluster.owner(stays)
    while True:
        moves = f"chat:{uuid.uuid4().hex[:8]}"
        if cluster.owner(moves).port == home.port and cluster.slot(moves) != cluster.slot(stays):
            break
    target = cluster.owner(on_other_shards(cluster, 1, stays)[0])
    inbox = Inbox()
    for channel in (stays, moves):
        replica.subscribe(channel_topic(channel), inbox)
    await replica.wait_synced()

    sent = 0
    moving = True

    async def publish_meanwhile() -> None:
        nonlocal sent
        while moving:
            sent += 1
            await publisher.publish(channel_topic(stays), str(sent))
            await asyncio.sleep(0.001)

    task = asyncio.create_task(publish_meanwhile())
    await asyncio.sleep(0.1)
    slot = cluster.slot(moves)
    target_id = target.client().execute_command("CLUSTER", "MYID")
    home.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    target.client().execute_command(
        "CLUSTER", "SETSLOT", slot, "IMPORTING", home.client().execute_command("CLUSTER", "MYID")
    )
    for node in (target, home, *cluster.nodes):
        if node.alive and node.client().info("replication")["role"] == "master":
            node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    await asyncio.sleep(0.3)
    moving = False
    await task
    received = []
    async with asyncio.timeout(5):
        while len(received) < sent:
            topic, payload = await inbox.next()
            assert topic == channel_topic(stays)
            received.append(int(payload))
    assert received == list(range(1, sent + 1))

    assert cluster.owner(moves).port == target.port
    async with asyncio.timeout(10):
        await replica.wait_synced()
    await publisher.publish(channel_topic(moves), "after the move")
    assert await inbox.next() == (channel_topic(moves), "after the move")


async def test_a_moved_slot_with_many_topics_routes_them_again_at_once(
    cluster: LocalCluster, quick_buses: BusMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slot that moves takes all its topics off their master's link, one message each (here
    200 channels of one slot, by a hash tag in their names): they are routed again with a few
    topology refreshes, not one each, and every one is delivered after."""
    publisher, replica = await quick_buses(cluster.url), await quick_buses(cluster.url)
    tag = uuid.uuid4().hex[:8]
    channels = [f"chat:{{{tag}}}{n}" for n in range(200)]
    slot = cluster.slot(channel_topic(channels[0]))
    assert {cluster.slot(channel_topic(channel)) for channel in channels} == {slot}
    inbox = Inbox()
    for channel in channels:
        replica.subscribe(channel_topic(channel), inbox)
    await replica.wait_synced()
    refreshes = 0
    real_refresh = bus_module.refresh_topology

    async def counted(cluster_client: RedisCluster) -> None:
        nonlocal refreshes
        refreshes += 1
        await real_refresh(cluster_client)

    monkeypatch.setattr(bus_module, "refresh_topology", counted)
    home = cluster.owner(channel_topic(channels[0]))
    target = cluster.owner(on_other_shards(cluster, 1, channel_topic(channels[0]))[0])
    target_id = target.client().execute_command("CLUSTER", "MYID")
    for node in cluster.nodes:
        if node.alive and node.client().info("replication")["role"] == "master":
            node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    assert cluster.owner(channel_topic(channels[0])).port == target.port != home.port
    await asyncio.sleep(0.5)
    async with asyncio.timeout(10):
        await replica.wait_synced()
    assert refreshes < 20, refreshes
    for channel in channels:
        await publisher.publish(channel_topic(channel), "after")
    got = {await inbox.next() for _ in channels}
    assert got == {(channel_topic(channel), "after") for channel in channels}
