"""``AUTH_WORKERS`` / ``WS_WORKERS`` as real processes: two workers per service on one port each,
PostgreSQL and Redis shared, a supervising parent that SIGTERM stops with its workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.services import free_port
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
    children = workers_of(proc)
    assert proc.process is not None
    proc.process.send_signal(signal.SIGTERM)
    assert proc.process.wait(timeout=15) == 0, "SIGTERM stops it cleanly"
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)


def test_workers_need_redis(tmp_path: Path) -> None:
    env = {**os.environ, "WS_WORKERS": "2", "WS_PORT": str(free_port()), "REDIS_URL": ""}
    result = subprocess.run(
        [sys.executable, "-m", "ws_service"], env=env, capture_output=True, timeout=30, check=False
    )
    assert result.returncode != 0
    assert b"WS_WORKERS above 1 needs REDIS_URL" in result.stderr
