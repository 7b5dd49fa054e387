"""``AUTH_WORKERS`` / ``WS_WORKERS`` as real processes: two workers per service on one port each,
PostgreSQL and Redis shared, a supervising parent that SIGTERM stops with its workers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.services import REDIS_URL, create_schema, drop_schema, free_port, redis_reachable
from tests.system.procs import Proc, service

pytestmark = [pytest.mark.system, pytest.mark.postgres, pytest.mark.redis]
PASSWORD = "correct horse battery staple"
SECRET = "system-test-secret-0123456789"
SOCKETS = 16


def workers_of(proc: Proc) -> list[int]:
    assert proc.process is not None
    pid = proc.process.pid
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def established_on(port: int, pids: list[int]) -> dict[int, int]:
    """How many accepted connections on ``port`` each of ``pids`` holds (from /proc)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                inodes.add(fields[9])
    counts = {}
    for pid in pids:
        fds = Path(f"/proc/{pid}/fd")
        links = [os.readlink(fd) for fd in fds.iterdir()]
        counts[pid] = sum(link.removeprefix("socket:[").rstrip("]") in inodes for link in links)
    return counts


async def post(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> Any:
    async with http.post(url, **kwargs) as resp:
        assert resp.status in (200, 201), await resp.text()
        return await resp.json()


async def test_two_workers_share_a_port_take_connections_revoke_on_both_and_stop_together(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    auth_port, ws_port = free_port(), free_port()
    auth_url = f"http://127.0.0.1:{auth_port}"
    auth_env = {
        "AUTH_PORT": str(auth_port),
        "AUTH_WORKERS": "2",
        "AUTH_DATABASE_URL": postgres_url,
        "AUTH_KEY_ENCRYPTION_SECRETS": SECRET,
        "REDIS_URL": redis_url,
    }
    ws_env = {
        "WS_PORT": str(ws_port),
        "WS_WORKERS": "2",
        "WS_ISSUER": auth_url,
        "WS_JWKS_URL": f"{auth_url}/.well-known/jwks.json",
        "REDIS_URL": redis_url,
    }
    with (
        service("auth_service", auth_env, auth_port, tmp_path) as auth,
        service("ws_service", ws_env, ws_port, tmp_path) as ws,
    ):
        assert len(workers_of(auth)) == 2 and len(workers_of(ws)) == 2
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            creds = {"username": "wendy", "password": PASSWORD}
            await post(http, f"{auth_url}/v1/register", json=creds)
            tokens = await post(http, f"{auth_url}/v1/login", json=creds)
            sockets = [
                await http.ws_connect(f"ws://127.0.0.1:{ws_port}/ws") for _ in range(SOCKETS)
            ]
            for sock in sockets:
                await sock.send_json({"type": "auth", "token": tokens["access_token"]})
                assert (await sock.receive_json(timeout=5))["type"] == "auth_success"
            per_worker = established_on(ws_port, workers_of(ws))
            assert sorted(per_worker.values()) != [0, SOCKETS], "both workers take connections"
            assert sum(per_worker.values()) == SOCKETS
            await post(
                http,
                f"{auth_url}/v1/logout",
                headers={"Authorization": f"Bearer {tokens['access_token']}"},
            )
            for sock in sockets:
                assert (await sock.receive_json(timeout=5))["type"] == "revoked"
                closing = await sock.receive(timeout=5)
                assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 4403)
        for proc in (ws, auth):
            sigterm_stops_every_worker(proc)


def sigterm_stops_every_worker(proc: Proc) -> None:
    """...and the parent removes the directory of the workers' metrics."""
    children = workers_of(proc)
    assert proc.process is not None
    metrics = f"metrics-{proc.process.pid}-*"
    assert len(list(Path(tempfile.gettempdir()).glob(metrics))) == 1
    proc.process.send_signal(signal.SIGTERM)
    assert proc.process.wait(timeout=15) == 0, "SIGTERM stops it cleanly"
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)
    assert not list(Path(tempfile.gettempdir()).glob(metrics))


def test_workers_need_redis(tmp_path: Path) -> None:
    env = {**os.environ, "WS_WORKERS": "2", "WS_PORT": str(free_port()), "REDIS_URL": ""}
    result = subprocess.run(
        [sys.executable, "-m", "ws_service"], env=env, capture_output=True, timeout=30, check=False
    )
    assert result.returncode != 0
    assert b"WS_WORKERS above 1 needs REDIS_URL" in result.stderr


def test_workers_whose_database_is_down_stop_at_once_saying_why(tmp_path: Path) -> None:
    """Each worker says in one JSON line what one process says, and the service exits 1 without
    restarting workers that would fail the same way (it used to log tracebacks and retry)."""
    redis_reachable()
    closed = free_port()
    env = {
        **os.environ,
        "AUTH_WORKERS": "2",
        "AUTH_PORT": str(free_port()),
        "AUTH_DATA_DIR": str(tmp_path),
        "AUTH_KEY_ENCRYPTION_SECRETS": SECRET,
        "AUTH_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{closed}/test",
        "REDIS_URL": REDIS_URL,
    }
    result = subprocess.run(
        [sys.executable, "-m", "auth_service"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    refusals = [line for line in lines if "cannot connect to PostgreSQL" in line["msg"]]
    assert len(refusals) == 2, lines
    assert lines[-1]["msg"] == "a worker could not start; stopping"
    assert not any("exc" in line or "started another" in line["msg"] for line in lines), lines


UNAUTHENTICATED_CAP = 8
USER_CAP = 5


@dataclass(frozen=True)
class Stack:
    auth: Proc
    ws: Proc
    auth_url: str
    ws_port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/ws"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two auth workers on a fresh PostgreSQL schema and two ws workers, with small caps."""
    redis_reachable()
    postgres_url, schema = asyncio.run(create_schema())
    auth_port, ws_port = free_port(), free_port()
    auth_url = f"http://127.0.0.1:{auth_port}"
    logs = tmp_path_factory.mktemp("workers")
    auth_env = {
        "AUTH_PORT": str(auth_port),
        "AUTH_WORKERS": "2",
        "AUTH_DATABASE_URL": postgres_url,
        "AUTH_KEY_ENCRYPTION_SECRETS": SECRET,
        "REDIS_URL": REDIS_URL,
    }
    ws_env = {
        "WS_PORT": str(ws_port),
        "WS_WORKERS": "2",
        "WS_ISSUER": auth_url,
        "WS_JWKS_URL": f"{auth_url}/.well-known/jwks.json",
        "WS_MAX_UNAUTHENTICATED_PER_ADDRESS": str(UNAUTHENTICATED_CAP),
        "WS_MAX_CONNECTIONS_PER_USER": str(USER_CAP),
        "REDIS_URL": REDIS_URL,
    }
    try:
        with ExitStack() as running:
            auth = running.enter_context(service("auth_service", auth_env, auth_port, logs))
            ws = running.enter_context(service("ws_service", ws_env, ws_port, logs))
            yield Stack(auth, ws, auth_url, ws_port)
    finally:
        asyncio.run(drop_schema(schema))


async def test_two_workers_hold_the_machines_caps_per_address_and_per_user(stack: Stack) -> None:
    """Many sockets at once from one address, then one user's many sockets at once: the kernel
    spreads both over the two workers, and still exactly the configured caps get in."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def unauthenticated() -> aiohttp.ClientWebSocketResponse | int:
            try:
                return await http.ws_connect(stack.ws_url)
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

        waiting = await asyncio.gather(*(unauthenticated() for _ in range(40)))
        refused = [ws for ws in waiting if isinstance(ws, int)]
        assert Counter(refused) == {429: 40 - UNAUTHENTICATED_CAP}
        for ws in waiting:
            if not isinstance(ws, int):
                await ws.close()

        creds = {"username": "cap-user", "password": PASSWORD}
        await post(http, f"{stack.auth_url}/v1/register", json=creds)
        token = (await post(http, f"{stack.auth_url}/v1/login", json=creds))["access_token"]

        async def as_the_user() -> tuple[aiohttp.ClientWebSocketResponse, str]:
            protocols = ("realtime.v1", f"realtime.bearer.{token}")
            ws = await http.ws_connect(stack.ws_url, protocols=protocols)
            first = await ws.receive_json(timeout=5)
            return ws, str(first.get("code", first["type"]))

        attempts = await asyncio.gather(*(as_the_user() for _ in range(20)))
        outcomes = Counter(outcome for _, outcome in attempts)
        assert outcomes == {"auth_success": USER_CAP, "too_many_connections": 20 - USER_CAP}
        for ws, _ in attempts:
            await ws.close()


async def scrape(http: aiohttp.ClientSession, base: str, name: str, **labels: str) -> float:
    """One sample of one scrape of ``base``/metrics (0 when absent)."""
    async with http.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


async def test_one_scrape_of_either_service_sums_every_worker(stack: Stack) -> None:
    """Requests and sockets that the kernel spread over both workers all count in one scrape."""
    ws_base = f"http://127.0.0.1:{stack.ws_port}"
    fresh = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=fresh) as http:
        requests = "auth_http_request_duration_seconds_count"
        health = {"route": "/healthz", "method": "GET", "status": "200"}
        before = await scrape(http, stack.auth_url, requests, **health)
        for _ in range(20):
            async with http.get(f"{stack.auth_url}/healthz") as resp:
                assert resp.status == 200
        assert await scrape(http, stack.auth_url, requests, **health) == before + 20

        tokens = []
        for name in ("m1", "m2", "m3"):
            creds = {"username": f"metrics-{name}", "password": PASSWORD}
            await post(http, f"{stack.auth_url}/v1/register", json=creds)
            tokens.append(
                (await post(http, f"{stack.auth_url}/v1/login", json=creds))["access_token"]
            )
        before = await scrape(http, ws_base, "ws_auth_total", outcome="ok")
        sockets = []
        for token in tokens * USER_CAP:
            sock = await http.ws_connect(stack.ws_url)
            await sock.send_json({"type": "auth", "token": token})
            assert (await sock.receive_json(timeout=5))["type"] == "auth_success"
            sockets.append(sock)
        per_worker = established_on(stack.ws_port, workers_of(stack.ws))
        assert sorted(per_worker.values()) != [0, len(sockets)], "both workers take sockets"
        assert await scrape(http, ws_base, "ws_auth_total", outcome="ok") == before + len(sockets)
        authenticated = await scrape(http, ws_base, "ws_connections", state="authenticated")
        assert authenticated == len(sockets)
        for sock in sockets:
            await sock.close()
