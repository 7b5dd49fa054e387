"""Benchmark: ws_service next to a bare aiohttp WebSocket server measured in the same run.

Reports auth handshakes/s and memory per idle authenticated connection as ratios to the baseline
(a bare aiohttp server that answers one text frame per connection), then, on two ws replicas over
the machine's Redis, publish-to-deliver latency across replicas and logout-to-close latency.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.services import REDIS_URL, free_port
from tests.system.procs import Proc

CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "2000"))
PASSWORD = "benchmark password 123"
SECRET = "benchmark-secret-0123456789"
BASELINE_WS = """
import sys
from aiohttp import web

async def ws(request):
    sock = web.WebSocketResponse(heartbeat=30, compress=False, max_msg_size=65536)
    await sock.prepare(request)
    async for _ in sock:
        await sock.send_str('{"type":"auth_success"}')
    return sock

async def ready(request):
    return web.json_response({"ready": True})

app = web.Application()
app.router.add_get("/ws", ws)
app.router.add_get("/readyz", ready)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), backlog=1024, print=None, access_log=None)
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def hold_connections(
    http: aiohttp.ClientSession, url: str, token: str, count: int
) -> tuple[list[aiohttp.ClientWebSocketResponse], float]:
    """Open and authenticate ``count`` sockets, 100 at a time; returns them and handshakes/s."""
    sockets: list[aiohttp.ClientWebSocketResponse] = []

    async def one() -> None:
        ws = await http.ws_connect(url, autoping=True)
        await ws.send_json({"type": "auth", "token": token})
        reply = await ws.receive_json(timeout=30)
        assert reply["type"] == "auth_success", reply
        sockets.append(ws)

    start = time.perf_counter()
    for offset in range(0, count, 100):
        await asyncio.gather(*(one() for _ in range(min(100, count - offset))))
    return sockets, count / (time.perf_counter() - start)


async def measure_holding(pid: int, url: str, token: str) -> tuple[float, float]:
    """(handshakes/s, KiB per idle authenticated connection) against one server process."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        before = rss_kib(pid)
        sockets, rate = await hold_connections(http, url, token, CONNECTIONS)
        await asyncio.sleep(1.0)
        per_connection = (rss_kib(pid) - before) / CONNECTIONS
        await asyncio.gather(*(ws.close() for ws in sockets))
        return rate, per_connection


async def login(http: aiohttp.ClientSession, base: str, username: str) -> dict[str, Any]:
    creds = {"username": username, "password": PASSWORD}
    async with http.post(f"{base}/v1/register", json=creds) as resp:
        assert resp.status in (201, 409), await resp.text()
    async with http.post(f"{base}/v1/login", json=creds) as resp:
        body: dict[str, Any] = await resp.json()
        return body


def percentiles(samples: list[float]) -> str:
    cuts = statistics.quantiles(samples, n=100)
    return f"p50 {cuts[49] * 1000:.2f} ms, p99 {cuts[98] * 1000:.2f} ms (n={len(samples)})"


async def cross_replica_latency(
    http: aiohttp.ClientSession, ws_urls: list[str], token: str
) -> list[float]:
    channel = f"chat:bench-{time.monotonic_ns()}"
    async with http.ws_connect(ws_urls[1]) as sub, http.ws_connect(ws_urls[0]) as pub:
        for ws in (sub, pub):
            await ws.send_json({"type": "auth", "token": token})
            assert (await ws.receive_json(timeout=10))["type"] == "auth_success"
        await sub.send_json({"type": "subscribe", "channel": channel, "id": 1})
        assert (await sub.receive_json(timeout=10))["type"] == "subscribed"
        samples = []
        for n in range(500):
            sent = time.perf_counter()
            await pub.send_json({"type": "publish", "channel": channel, "data": n})
            while True:
                frame = await sub.receive_json(timeout=10)
                if frame.get("type") == "message" and frame["data"] == n:
                    break
            samples.append(time.perf_counter() - sent)
            await pub.receive_json(timeout=10)  # the publish ack
            if n % 15 == 14:
                await asyncio.sleep(1.0)  # stay under the per-socket rate limit
        return samples


async def revocation_latency(
    http: aiohttp.ClientSession, auth: str, ws_url: str, sessions: int = 30
) -> list[float]:
    samples = []
    for _ in range(sessions):
        tokens = await login(http, auth, "bench-revoked")
        async with http.ws_connect(ws_url) as ws:
            await ws.send_json({"type": "auth", "token": tokens["access_token"]})
            assert (await ws.receive_json(timeout=10))["type"] == "auth_success"
            started = time.perf_counter()
            async with http.post(
                f"{auth}/v1/logout", headers={"Authorization": f"Bearer {tokens['access_token']}"}
            ) as resp:
                assert resp.status == 200
            while (await ws.receive(timeout=10)).type not in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
            ):
                pass
            samples.append(time.perf_counter() - started)
    return samples


async def with_procs(procs: list[Proc], body: Callable[[], Awaitable[None]]) -> None:
    try:
        for proc in procs:
            proc.start()
            proc.wait_ready()
        await body()
    finally:
        for proc in reversed(procs):
            proc.stop()


async def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ws-bench-"))
    port = free_port()
    baseline = Proc(
        "baseline", [sys.executable, "-c", BASELINE_WS, str(port)], {}, tmp,
        f"http://127.0.0.1:{port}/readyz",
    )  # fmt: skip
    results: dict[str, Any] = {}

    async def run_baseline() -> None:
        assert baseline.process is not None
        results["baseline"] = await measure_holding(
            baseline.process.pid, f"ws://127.0.0.1:{port}/ws", "x"
        )

    await with_procs([baseline], run_baseline)

    auth_port, ws_ports = free_port(), [free_port(), free_port()]
    auth_url = f"http://127.0.0.1:{auth_port}"
    common = {"REDIS_URL": REDIS_URL, "AUTH_ISSUER": auth_url}
    auth = Proc(
        "auth",
        [sys.executable, "-m", "auth_service"],
        {**common, "AUTH_PORT": str(auth_port), "AUTH_DATA_DIR": str(tmp),
         "AUTH_KEY_ENCRYPTION_SECRETS": SECRET},
        tmp,
        f"{auth_url}/readyz",
    )  # fmt: skip
    replicas = [
        Proc(
            f"ws-{i + 1}",
            [sys.executable, "-m", "ws_service"],
            {**common, "WS_PORT": str(p), "WS_MAX_CONNECTIONS_PER_USER": str(CONNECTIONS + 10)},
            tmp,
            f"http://127.0.0.1:{p}/readyz",
        )
        for i, p in enumerate(ws_ports)
    ]
    ws_urls = [f"ws://127.0.0.1:{p}/ws" for p in ws_ports]

    async def run_gateway() -> None:
        async with aiohttp.ClientSession() as http:
            tokens = await login(http, auth_url, "bench")
            assert replicas[0].process is not None
            results["gateway"] = await measure_holding(
                replicas[0].process.pid, ws_urls[0], tokens["access_token"]
            )
            results["cross"] = await cross_replica_latency(http, ws_urls, tokens["access_token"])
            results["revoke"] = await revocation_latency(http, auth_url, ws_urls[1])

    await with_procs([auth, *replicas], run_gateway)

    (base_rate, base_mem), (rate, mem) = results["baseline"], results["gateway"]
    print(f"connections held per server: {CONNECTIONS}")
    print(f"{'':<34}{'baseline':>12}{'ws_service':>12}{'ratio':>8}")
    print(f"{'auth handshakes/s':<34}{base_rate:>12.0f}{rate:>12.0f}{rate / base_rate:>8.2f}")
    print(
        f"{'KiB per idle authenticated socket':<34}{base_mem:>12.1f}{mem:>12.1f}{mem / base_mem:>8.2f}"
    )
    print(f"publish-to-deliver across replicas: {percentiles(results['cross'])}")
    print(f"logout-to-close across processes:   {percentiles(results['revoke'])}")


if __name__ == "__main__":
    asyncio.run(main())
