"""WS_MAX_CONNECTIONS_PER_USER scaled out: one cap for a user across every replica, taken
atomically in Redis; this replica's own cap when Redis cannot be reached."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter

import redis

from tests.integration.bus.support import PrivateRedis, command_calls
from tests.integration.ws.conftest import MakeGateway
from tests.integration.ws.harness import Harness, auth, expect_open
from tests.support.logs import json_lines
from ws_service.appkeys import METRICS
from ws_service.redis.client import open_redis
from ws_service.redis.slots import RedisUserSlots

CAP = 3


def outcome(gw: Harness, name: str) -> float:
    labels = {"outcome": name}
    return gw.app[METRICS].registry.get_sample_value("ws_user_limit_checks_total", labels) or 0.0


async def attempt(gw: Harness, user: str) -> str:
    """Open a socket and authenticate as ``user``: ``auth_success`` or the refusal's code."""
    reply = await auth(await gw.open(), gw.tokens.make(user))
    return str(reply.get("code", reply["type"]))


async def test_one_user_connecting_on_two_replicas_at_once_gets_exactly_the_cap(
    make_gateway: MakeGateway, redis_url: str
) -> None:
    replicas = [
        await make_gateway(redis_url=redis_url, max_connections_per_user=CAP) for _ in range(2)
    ]
    user = uuid.uuid4().hex
    outcomes = await asyncio.gather(*(attempt(gw, user) for _ in range(8) for gw in replicas))
    assert Counter(outcomes) == {"auth_success": CAP, "too_many_connections": 16 - CAP}
    assert sum(outcome(gw, "ok") for gw in replicas) == CAP


async def test_a_closed_socket_gives_its_slot_to_the_other_replica(
    make_gateway: MakeGateway, redis_url: str
) -> None:
    one = await make_gateway(redis_url=redis_url, max_connections_per_user=1)
    two = await make_gateway(redis_url=redis_url, max_connections_per_user=1)
    user = uuid.uuid4().hex
    held = await one.login(user)
    assert await attempt(two, user) == "too_many_connections"
    await held.close()
    for _ in range(100):  # the slot is given back in the background, within milliseconds
        if await attempt(two, user) == "auth_success":
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the closed socket's slot was never given back")


async def test_without_redis_admission_fails_open_within_this_replicas_cap(
    make_gateway: MakeGateway, private_redis: PrivateRedis
) -> None:
    gw = await make_gateway(redis_url=private_redis.url, max_connections_per_user=2)
    await private_redis.kill()
    with json_lines(logging.WARNING) as logs:
        first, second = await gw.login("alice"), await gw.login("alice")
        assert await attempt(gw, "alice") == "too_many_connections"
    assert outcome(gw, "unavailable") == 2
    # Every handshake met the outage; the log says so once (a line per 10 s), not per handshake.
    assert (
        len(
            logs.logged(
                "ws_service.domain.gateway", "connection slots unreachable; sockets admitted"
            )
        )
        == 1
    )
    assert (
        len(
            logs.logged(
                "ws_service.domain.gateway", "revocation ledger unreachable; tokens accepted"
            )
        )
        == 1
    )
    await expect_open(first)
    await expect_open(second)


async def test_a_batch_of_slot_acquires_is_one_round_trip_even_after_a_script_flush(
    private_redis: PrivateRedis,
) -> None:
    """Concurrent handshakes share one pipeline of EVALSHA calls: no SCRIPT EXISTS before each
    batch (redis-py's pipeline asks it on every execute), and a server whose script cache was
    emptied (a restart, a promoted replica) gets the script loaded once and the batch again."""
    client = open_redis(private_redis.url)
    slots = RedisUserSlots(client)
    admin = redis.Redis.from_url(private_redis.url)
    try:
        assert await slots.acquire("warm", "s0", 1)  # loads the script (NOSCRIPT, then LOAD)
        admin.config_resetstat()
        users = [f"u{n}" for n in range(20)]
        taken = await asyncio.gather(*(slots.acquire(user, "s1", 1) for user in users))
        assert taken == [True] * 20
        calls = await command_calls(private_redis.url)
        assert calls.get("evalsha") == 20
        assert "script|exists" not in calls and "script" not in calls, calls

        admin.script_flush()
        admin.config_resetstat()
        again = await asyncio.gather(*(slots.acquire(user, "s2", 2) for user in users))
        assert again == [True] * 20
        assert await slots.acquire(users[0], "s3", 2) is False  # the cap still counts
        calls = await command_calls(private_redis.url)
        assert calls.get("script|load") == 1, calls
        assert calls.get("evalsha") == 20 + 20 + 1, calls  # refused batch, sent again, the last
    finally:
        await slots.close()
        await client.aclose()
        admin.close()
