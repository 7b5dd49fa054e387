"""Benchmark: what history costs per message and what recovery costs per reconnect.

1. Publish throughput with history off and on, for both backends: a bare PUBLISH against the
   history script (offset, stream append, PUBLISH) on the machine's Redis, and the in-process bus
   against the in-memory ring.
2. Recovery: ``BENCH_RECOVERIES`` (10 000) subscribers of one channel reconnecting at once, each
   missing ``BENCH_MISSED`` (20) messages, against the Redis backend (the server-side cost), then
   ``BENCH_SOCKETS`` (1 000) real sockets reconnecting at once to a ws_service app in this process
   and resubscribing with ``since`` (the whole path: upgrade, auth, join, read, answer).

Run on its own with ``python -m tests.bench.history``; ``make bench`` runs it too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import rsa
from redis.asyncio import Redis

from shared.bus import InProcessBus
from shared.redis.bus import RedisBus
from tests.integration.ws.harness import AUDIENCE, ISSUER, KeySet, Tokens
from tests.services import REDIS_URL
from ws_service.app import create_app
from ws_service.domain import protocol
from ws_service.domain.history import HistoryPolicy, MemoryHistory, Position
from ws_service.redis.client import open_redis
from ws_service.redis.history import RedisHistory
from ws_service.settings import Settings

MESSAGES = int(os.environ.get("BENCH_MESSAGES", "20000"))
RECOVERIES = int(os.environ.get("BENCH_RECOVERIES", "10000"))
SOCKETS = int(os.environ.get("BENCH_SOCKETS", "1000"))
MISSED = int(os.environ.get("BENCH_MISSED", "20"))
CONCURRENCY = 50
POLICY = HistoryPolicy(size=100, ttl=300)
FRAME = protocol.message("chat:bench", {"text": "x" * 100}, None, 1795966297123)


async def rate(count: int, publish: Callable[[int], Awaitable[Any]]) -> float:
    """Messages per second with ``CONCURRENCY`` publishers sharing ``count`` messages."""
    done = iter(range(count))

    async def worker() -> None:
        for n in done:
            await publish(n)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return count / (time.perf_counter() - start)


async def publish_throughput(redis: Redis, prefix: str) -> None:
    bus = RedisBus(REDIS_URL)
    await bus.start()
    history = RedisHistory(redis, prefix=prefix)
    topic = f"{prefix}topic"
    try:
        off = await rate(MESSAGES, lambda n: bus.publish(topic, FRAME))
        on = await rate(MESSAGES, lambda n: history.publish(f"c{n % 100}", topic, FRAME, POLICY))
    finally:
        await bus.close()
    local = InProcessBus()
    memory = MemoryHistory(local.publish)
    local_off = await rate(MESSAGES * 5, lambda n: local.publish(topic, FRAME))
    local_on = await rate(
        MESSAGES * 5, lambda n: memory.publish(f"c{n % 100}", topic, FRAME, POLICY)
    )
    print(f"publish, {len(FRAME)}-byte frames, {CONCURRENCY} concurrent publishers:")
    print(
        f"  Redis:     history off {off:9.0f}/s ({1e6 / off:5.1f} us each), "
        f"on {on:9.0f}/s ({1e6 / on:5.1f} us each): {off / on:.2f}x"
    )
    print(
        f"  embedded:  history off {local_off:9.0f}/s ({1e6 / local_off:5.1f} us each), "
        f"on {local_on:9.0f}/s ({1e6 / local_on:5.1f} us each): {local_off / local_on:.2f}x"
    )


async def recovery_in_redis(redis: Redis, prefix: str) -> None:
    history = RedisHistory(redis, prefix=prefix)
    for _ in range(POLICY.size):
        await history.publish("chat:r", f"{prefix}t", FRAME, POLICY)
    position = (await history.read("chat:r", None, 0, POLICY)).position
    since = Position(position.offset - MISSED, position.epoch)
    times: list[float] = []

    async def recover() -> None:
        began = time.perf_counter()
        page = await history.read("chat:r", since, POLICY.size, POLICY)
        times.append(time.perf_counter() - began)
        assert page.recovered and len(page.publications) == MISSED

    start = time.perf_counter()
    await asyncio.gather(*(recover() for _ in range(RECOVERIES)))
    total = time.perf_counter() - start
    print(f"recovery in Redis: {RECOVERIES} subscribers at once, {MISSED} missed messages each:")
    print(
        f"  all done in {total:.2f} s ({RECOVERIES / total:.0f} recoveries/s, "
        f"{1e6 * total / RECOVERIES:.0f} us and {MISSED * len(FRAME) / 1024:.1f} KiB each, "
        f"{1e6 * total / RECOVERIES / MISSED:.1f} us per recovered message); "
        f"latency p50 {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"
    )


async def recovery_over_sockets() -> None:
    """Real sockets: authenticate, resubscribe with ``since``, wait for ``subscribed``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keyset = KeySet({"k": key})
    jwks = TestServer(keyset.app())
    await jwks.start_server()
    settings = Settings(
        jwks_url=str(jwks.make_url("/.well-known/jwks.json")),
        issuer=ISSUER,
        audience=AUDIENCE,
        max_connections_per_user=SOCKETS + 1,
        # every client is on 127.0.0.1: lift the per-address cap on sockets still to authenticate
        max_unauthenticated_per_address=SOCKETS + 1,
    )
    app = create_app(settings, bus=InProcessBus())
    server = TestServer(app)
    await server.start_server()
    token = Tokens(key, "k").make("bench", ttl=3600)
    url = str(server.make_url("/ws"))
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            async with http.ws_connect(url) as publisher:
                await publisher.send_json({"type": "auth", "token": token})
                await publisher.receive_json()
                await publisher.send_json({"type": "subscribe", "channel": "chat:s", "id": 0})
                epoch = (await publisher.receive_json())["position"]["epoch"]
                for n in range(MISSED):
                    await publisher.send_json({"type": "publish", "channel": "chat:s", "data": n})
                    while (await publisher.receive_json())["type"] != "published":
                        pass
            since = {"offset": 0, "epoch": epoch}
            times: list[float] = []
            gate = asyncio.Semaphore(200)  # the client side's own limit on concurrent handshakes

            async def reconnect() -> aiohttp.ClientWebSocketResponse:
                async with gate:
                    began = time.perf_counter()
                    ws = await http.ws_connect(url)
                    await ws.send_json({"type": "auth", "token": token})
                    await ws.receive_json()
                    await ws.send_json({"type": "subscribe", "channel": "chat:s", "since": since})
                    reply = await ws.receive_json()
                    times.append(time.perf_counter() - began)
                    assert reply["recovered"] and len(reply["publications"]) == MISSED
                    return ws

            start = time.perf_counter()
            sockets = await asyncio.gather(*(reconnect() for _ in range(SOCKETS)))
            total = time.perf_counter() - start
            for ws in sockets:
                await ws.close()
    finally:
        await server.close()
        await jwks.close()
    print(
        f"recovery over sockets (embedded, client and server in this process): {SOCKETS} "
        f"reconnecting at once, {MISSED} missed each: all recovered in {total:.2f} s "
        f"({SOCKETS / total:.0f}/s); per reconnect p50 {statistics.median(times) * 1000:.0f} ms"
    )


async def main() -> None:
    redis = open_redis(REDIS_URL)
    prefix = f"bench-hist-{uuid.uuid4().hex[:8]}:"
    try:
        await publish_throughput(redis, prefix)
        await recovery_in_redis(redis, prefix)
    finally:
        keys = [key async for key in redis.scan_iter(f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
    await recovery_over_sockets()


if __name__ == "__main__":
    argparse.ArgumentParser(
        prog="python -m tests.bench.history",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args()
    asyncio.run(main())
