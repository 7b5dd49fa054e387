"""Benchmark: auth_service logins/s and refreshes/s, as ratios to a bare aiohttp baseline.

Run with `make bench`. Each figure comes from a real service process on loopback, measured in the
same run as the baseline (a bare aiohttp JSON endpoint), so ratios are comparable across machines.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from tests.services import free_port, postgres_schema
from tests.system.procs import service

PASSWORD = "benchmark password 123"
BASELINE_APP = """
import sys
from aiohttp import web
async def ok(request):
    await request.read()
    return web.json_response({"ok": True})
async def ready(request):
    return web.json_response({"status": "ready"})
app = web.Application()
app.router.add_post("/", ok)
app.router.add_get("/readyz", ready)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


async def rate(count: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> float:
    """Requests/s of ``count`` calls of ``one(worker_index)`` over ``concurrency`` workers."""
    queue = iter(range(count))

    async def worker(index: int) -> None:
        for _ in queue:
            await one(index)

    start = time.perf_counter()
    await asyncio.gather(*(worker(index) for index in range(concurrency)))
    return count / (time.perf_counter() - start)


async def baseline(port: int) -> float:
    async with aiohttp.ClientSession() as http:

        async def one(_: int) -> None:
            async with http.post(f"http://127.0.0.1:{port}/", json={"a": 1}) as resp:
                assert resp.status == 200

        return await rate(3000, 16, one)


async def auth_rates(port: int) -> tuple[float, float]:
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/v1/register", json={"username": "bench", "password": PASSWORD}
        ) as resp:
            assert resp.status == 201, await resp.text()

        async def login(_: int) -> None:
            async with http.post(
                f"{base}/v1/login", json={"username": "bench", "password": PASSWORD}
            ) as resp:
                assert resp.status == 200, await resp.text()

        logins = await rate(200, 8, login)
        chains = []
        for _ in range(16):
            async with http.post(
                f"{base}/v1/login", json={"username": "bench", "password": PASSWORD}
            ) as resp:
                chains.append((await resp.json())["refresh_token"])

        async def refresh(slot: int) -> None:
            async with http.post(
                f"{base}/v1/token",
                data={"grant_type": "refresh_token", "refresh_token": chains[slot]},
            ) as resp:
                assert resp.status == 200, await resp.text()
                chains[slot] = (await resp.json())["refresh_token"]

        refreshes = await rate(2000, len(chains), refresh)
        return logins, refreshes


async def main() -> None:
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        port = free_port()
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", BASELINE_APP, str(port))
        try:
            await asyncio.sleep(1.0)
            base_rate = await baseline(port)
        finally:
            proc.terminate()
            await proc.wait()
        secret = {"AUTH_KEY_ENCRYPTION_SECRETS": "benchmark-secret-0123456789"}
        port = free_port()
        env = {**secret, "AUTH_PORT": str(port), "AUTH_DATA_DIR": tmp}
        with service("auth_service", env, port, logs):
            rows.append(("sqlite", *await auth_rates(port)))
        try:
            async with postgres_schema() as url:
                port = free_port()
                env = {**secret, "AUTH_PORT": str(port), "AUTH_DATABASE_URL": url}
                with service("auth_service", env, port, logs):
                    rows.append(("postgresql", *await auth_rates(port)))
        except BaseException as exc:  # skip/fail outcomes from postgres_schema are exceptions too
            print(f"postgresql: not measured ({exc})")
    print(f"baseline (bare aiohttp JSON POST): {base_rate:8.0f} req/s")
    print(f"{'store':<12}{'logins/s':>10}{'refreshes/s':>13}{'refresh/baseline':>18}")
    for store, logins, refreshes in rows:
        print(f"{store:<12}{logins:>10.1f}{refreshes:>13.1f}{refreshes / base_rate:>18.3f}")


if __name__ == "__main__":
    asyncio.run(main())
