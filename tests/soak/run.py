"""``make soak``: thousands of sockets against the real stack (``python -m services`` as a process)
for a bounded time, through renewals, logouts, reconnects and garbage; then a report of errors,
the server's RSS growth and its file descriptors. Not part of ``make test``.

SOAK_SOCKETS (default 2000), SOAK_SECONDS (60) and SOAK_USERS (20) size it. Exits 1 when a
client saw an undocumented close (1011, 1006...) or a frame that is not strict JSON, when the
server logged a traceback, or when its file descriptors did not return to the baseline after the
clients left; RSS growth is reported (and fails above SOAK_MAX_RSS_GROWTH_MB, default 200).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from realtime_gateway_protocol.close_codes import Disconnect
from realtime_gateway_protocol.wire_json import loads
from tests.services import free_port
from tests.system.procs import service

PASSWORD = "correct horse battery staple"
EXPECTED_CLOSES = {row.code for row in Disconnect} - {1011}
GARBAGE = [
    "{",
    "[]",
    '{"type": 5}',
    '{"type": "publish", "channel": "chat:x", "data": 1e400}',
    "x" * 100,
]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Soak:
    def __init__(self, auth: str, ws: str, users: int, deadline: float) -> None:
        self.auth, self.ws, self.deadline = auth, ws, deadline
        self.users = [f"soak{i}" for i in range(users)]
        self.tokens: dict[str, dict[str, Any]] = {}
        self.counts: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self.locks = {user: asyncio.Lock() for user in self.users}

    async def setup(self, http: aiohttp.ClientSession) -> None:
        for user in self.users:
            creds = {"username": user, "password": PASSWORD}
            async with http.post(f"{self.auth}/v1/register", json=creds) as resp:
                assert resp.status in (201, 409), await resp.text()
            await self.login(http, user)

    async def login(self, http: aiohttp.ClientSession, user: str, stale: Any = None) -> None:
        """Log ``user`` in again, once for all their sockets that saw ``stale`` revoked."""
        async with self.locks[user]:
            if stale is not None and self.tokens.get(user) is not stale:
                return
            creds = {"username": user, "password": PASSWORD}
            async with http.post(f"{self.auth}/v1/login", json=creds) as resp:
                self.counts[f"login_{resp.status}"] += 1
                if resp.status == 200:
                    self.tokens[user] = await resp.json()
                elif resp.status == 429:
                    await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))
                else:
                    self.errors.append(f"{user}: login {resp.status} {await resp.text()}")

    async def refresh(self, http: aiohttp.ClientSession, user: str) -> None:
        data = {"grant_type": "refresh_token", "refresh_token": self.tokens[user]["refresh_token"]}
        async with http.post(f"{self.auth}/v1/token", data=data) as resp:
            if resp.status == 200:
                self.tokens[user] = await resp.json()
                self.counts["refreshes"] += 1
            else:  # another socket of the user rotated it first, or it was logged out
                self.counts[f"refresh_{resp.status}"] += 1

    async def client(self, http: aiohttp.ClientSession, index: int) -> None:
        user = self.users[index % len(self.users)]
        while time.monotonic() < self.deadline:
            try:
                await self.session(http, user)
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.counts[f"client_error_{type(exc).__name__}"] += 1
                await asyncio.sleep(0.5)

    async def session(self, http: aiohttp.ClientSession, user: str) -> None:
        tokens = self.tokens[user]
        async with http.ws_connect(self.ws, heartbeat=None) as ws:
            await ws.send_json({"type": "auth", "token": tokens["access_token"]})
            await ws.send_json({"type": "subscribe", "channel": "chat:soak"})
            we_closed: list[bool] = []
            actor = asyncio.ensure_future(self.actor(http, ws, user, we_closed))
            try:
                async for msg in ws:
                    frame = loads(msg.data)
                    self.counts[f"frame_{frame['type']}"] += 1
                    if frame["type"] == "token_expiring":
                        await self.refresh(http, user)
                        tokens = self.tokens[user]
                        await ws.send_json({"type": "auth", "token": tokens["access_token"]})
            finally:
                actor.cancel()
                await asyncio.gather(actor, return_exceptions=True)
            code = ws.close_code
            if we_closed:
                self.counts["closed_by_client"] += 1
                return
            self.counts[f"close_{code}"] += 1
            if code not in EXPECTED_CLOSES:
                self.errors.append(f"{user}: close {code}")
            if code in (4401, 4403):
                await self.login(http, user, stale=tokens)

    async def actor(
        self,
        http: aiohttp.ClientSession,
        ws: aiohttp.ClientWebSocketResponse,
        user: str,
        we_closed: list[bool],
    ) -> None:
        """What the user does while the reader reads: random actions, a close at the deadline."""
        while not ws.closed:
            pause = random.uniform(0.5, 5)
            if time.monotonic() + pause >= self.deadline:
                await asyncio.sleep(max(0.0, self.deadline - time.monotonic()))
                we_closed.append(True)
                await ws.close()
                return
            await asyncio.sleep(pause)
            if not ws.closed:
                await self.act(http, ws, user, we_closed)

    async def act(
        self,
        http: aiohttp.ClientSession,
        ws: aiohttp.ClientWebSocketResponse,
        user: str,
        we_closed: list[bool],
    ) -> None:
        roll = random.random()
        if roll < 0.6:
            await ws.send_json({"type": "publish", "channel": "chat:soak", "data": {"n": roll}})
        elif roll < 0.8:
            await ws.send_json({"type": "ping"})
        elif roll < 0.9:
            await ws.send_str(random.choice(GARBAGE))
        elif roll < 0.98:
            we_closed.append(True)
            await ws.close()
            self.counts["reconnects"] += 1
        else:
            headers = {"Authorization": f"Bearer {self.tokens[user]['access_token']}"}
            async with http.post(
                f"{self.auth}/v1/logout", json={"all": True}, headers=headers
            ) as resp:
                self.counts[f"logout_{resp.status}"] += 1


async def soak(sockets: int, seconds: float, users: int, workdir: Path) -> int:
    auth_port, ws_port = free_port(), free_port()
    env = {
        "AUTH_DEV": "1",
        "AUTH_DATA_DIR": str(workdir),
        "AUTH_PORT": str(auth_port),
        "AUTH_ACCESS_TOKEN_TTL": "30",
        "WS_PORT": str(ws_port),
        "WS_EXPIRY_WARNING": "10",
        "WS_MAX_CONNECTIONS_PER_USER": str(sockets),
        "WS_MAX_UNAUTHENTICATED_PER_ADDRESS": str(sockets),
        "WS_RATE_BURST": "100",
    }
    with service("services", env, auth_port, workdir, timeout=60) as proc:
        assert proc.process is not None
        pid = proc.process.pid
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            run = Soak(f"http://127.0.0.1:{auth_port}", f"ws://127.0.0.1:{ws_port}/ws", users, 0)
            await run.setup(http)
            base_fds, base_rss = fds(pid), rss_kb(pid)
            run.deadline = time.monotonic() + seconds
            clients = [asyncio.ensure_future(run.client(http, i)) for i in range(sockets)]
            await asyncio.sleep(min(10.0, seconds / 3))
            warm_rss, peak_fds = rss_kb(pid), fds(pid)
            await asyncio.gather(*clients)
            end_rss = rss_kb(pid)
        await asyncio.sleep(2)
        after_fds = fds(pid)
        tracebacks = proc.tail(10_000_000).count("Traceback")
    growth_mb = (end_rss - warm_rss) / 1024
    print(f"sockets {sockets}, {seconds:.0f} s, {users} users")
    for name, count in sorted(run.counts.items()):
        print(f"  {name:32} {count}")
    print(
        f"server RSS: {base_rss // 1024} MiB idle, {warm_rss // 1024} MiB warm, {end_rss // 1024} MiB at the end ({growth_mb:+.1f} MiB)"
    )
    print(f"server fds: {base_fds} idle, {peak_fds} under load, {after_fds} after the clients left")
    print(f"errors: {len(run.errors)} undocumented closes, {tracebacks} tracebacks")
    for error in run.errors[:20]:
        print(f"  {error}")
    failed = (
        bool(run.errors)
        or tracebacks > 0
        or after_fds > base_fds + 5
        or growth_mb > float(os.environ.get("SOAK_MAX_RSS_GROWTH_MB", "200"))
    )
    print("FAILED" if failed else "OK")
    return 1 if failed else 0


def main() -> int:
    argparse.ArgumentParser(
        prog="python -m tests.soak.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args()
    sockets = int(os.environ.get("SOAK_SOCKETS", "2000"))
    seconds = float(os.environ.get("SOAK_SECONDS", "60"))
    users = int(os.environ.get("SOAK_USERS", "20"))
    with tempfile.TemporaryDirectory() as workdir:
        return asyncio.run(soak(sockets, seconds, users, Path(workdir)))


if __name__ == "__main__":
    sys.exit(main())
