"""auth_service as real processes: the CLI, and two replicas sharing one PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from tests.services import free_port
from tests.system.procs import run_cli, service

pytestmark = pytest.mark.system
PASSWORD = "correct horse battery staple"
SECRET = "system-test-secret-0123456789"


async def post(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with session.post(url, **kwargs) as resp:
        return resp.status, await resp.json()


async def test_cli_and_service_on_sqlite(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "AUTH_DEV": "1",
        "AUTH_DATA_DIR": str(tmp_path),
        "AUTH_PORT": str(port),
        "AUTH_JWKS_MAX_AGE": "4",
    }
    assert "created user carol" in run_cli(
        "auth_service", ["users", "create", "carol"], env, PASSWORD + "\n"
    )
    with service("auth_service", env, port, tmp_path):
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            status, tokens = await post(
                http, f"{base}/v1/login", json={"username": "carol", "password": PASSWORD}
            )
            assert status == 200
            async with http.get(f"{base}/.well-known/jwks.json") as resp:
                jwks = await resp.json()
            kid = jwt.get_unverified_header(tokens["access_token"])["kid"]
            key = jwt.PyJWKSet.from_dict(jwks)[kid]
            claims = jwt.decode(
                tokens["access_token"], key, algorithms=["RS256"], audience="ws", issuer=base
            )
            assert claims["preferred_username"] == "carol"
            out = run_cli("auth_service", ["keys", "rotate", "--immediate"], env)
            new_kid = out.split()[2]
            listing = run_cli("auth_service", ["keys", "list"], env)
            assert f"{new_kid}  generation=2" in listing and "signing" in listing
            for _ in range(50):
                async with http.get(f"{base}/.well-known/jwks.json") as resp:
                    kids = [k["kid"] for k in (await resp.json())["keys"]]
                if new_kid in kids:
                    break
                await asyncio.sleep(0.1)
            assert kids == [kid, new_kid], "the running service picked up the rotated key"
            status, renewed = await post(
                http,
                f"{base}/v1/token",
                data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
            )
            assert status == 200
            assert jwt.get_unverified_header(renewed["access_token"])["kid"] == new_kid


@contextmanager
def two_replicas(postgres_url: str, tmp_path: Path, **extra: str) -> Iterator[list[str]]:
    """Two auth_service processes on one PostgreSQL database; yields their base URLs."""
    ports = [free_port(), free_port()]
    common = {
        "AUTH_DATABASE_URL": postgres_url,
        "AUTH_KEY_ENCRYPTION_SECRETS": SECRET,
        "AUTH_ISSUER": "http://auth.test",
        **extra,
    }
    with (
        service("auth_service", {**common, "AUTH_PORT": str(ports[0])}, ports[0], tmp_path),
        service("auth_service", {**common, "AUTH_PORT": str(ports[1])}, ports[1], tmp_path),
    ):
        yield [f"http://127.0.0.1:{p}" for p in ports]


@pytest.mark.postgres
async def test_two_replicas_on_postgres_share_keys_and_refresh_once(
    postgres_url: str, tmp_path: Path
) -> None:
    with two_replicas(postgres_url, tmp_path) as urls:
        async with aiohttp.ClientSession() as http:
            jwks = []
            for url in urls:
                async with http.get(f"{url}/.well-known/jwks.json") as resp:
                    jwks.append(await resp.json())
            assert jwks[0] == jwks[1] and len(jwks[0]["keys"]) == 1
            status, _ = await post(
                http, f"{urls[0]}/v1/register", json={"username": "dave", "password": PASSWORD}
            )
            assert status == 201
            status, tokens = await post(
                http, f"{urls[1]}/v1/login", json={"username": "dave", "password": PASSWORD}
            )
            assert status == 200
            form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
            results = await asyncio.gather(
                *(post(http, f"{urls[i % 2]}/v1/token", data=form) for i in range(20))
            )
            assert sorted(status for status, _ in results) == [200] + [400] * 19
            (winner,) = [body for status, body in results if status == 200]
            status, _ = await post(
                http, f"{urls[0]}/v1/token", data={**form, "refresh_token": winner["refresh_token"]}
            )
            assert status == 200, json.dumps(winner)


@pytest.mark.postgres
async def test_two_replicas_admit_at_most_ten_simultaneous_guesses(
    postgres_url: str, tmp_path: Path
) -> None:
    with two_replicas(postgres_url, tmp_path) as urls:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            status, _ = await post(
                http, f"{urls[0]}/v1/register", json={"username": "erin", "password": PASSWORD}
            )
            assert status == 201
            guess = {"username": "erin", "password": "wrong password!"}
            results = await asyncio.gather(
                *(post(http, f"{urls[i % 2]}/v1/login", json=guess) for i in range(120))
            )
            admitted = [status for status, _ in results if status != 429]
            assert len(admitted) <= 10 and set(admitted) <= {401}, admitted
            verified = 0.0
            for url in urls:
                async with http.get(f"{url}/metrics") as resp:
                    text = await resp.text()
                verified += next(
                    float(line.split()[1])
                    for line in text.splitlines()
                    if line.startswith("auth_password_verifications_total ")
                )
            assert verified == len(admitted)


@pytest.mark.postgres
@pytest.mark.redis
async def test_an_immediate_rotation_over_redis_reaches_every_replica_at_once(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    """``keys rotate --immediate`` announces on the bus: no replica keeps signing with the old key
    until its reload timer fires (30 s)."""
    env = {"REDIS_URL": redis_url}
    with two_replicas(postgres_url, tmp_path, **env) as urls:
        async with aiohttp.ClientSession() as http:
            creds = {"username": "erin", "password": PASSWORD}
            assert (await post(http, f"{urls[0]}/v1/register", json=creds))[0] == 201
            cli_env = {
                "AUTH_DATABASE_URL": postgres_url,
                "AUTH_KEY_ENCRYPTION_SECRETS": SECRET,
                "AUTH_ISSUER": "http://auth.test",
                **env,
            }
            started = asyncio.get_running_loop().time()
            out = run_cli("auth_service", ["keys", "rotate", "--immediate"], cli_env)
            assert "announced over Redis" in out, out
            new_kid = out.split()[2]
            for url in urls:
                while True:
                    _, tokens = await post(http, f"{url}/v1/login", json=creds)
                    if jwt.get_unverified_header(tokens["access_token"])["kid"] == new_kid:
                        break
                    assert asyncio.get_running_loop().time() - started < 5, "old key still signs"
                    await asyncio.sleep(0.1)


@pytest.mark.redis
def test_sigterm_stops_a_redis_backed_replica_at_once(redis_url: str, tmp_path: Path) -> None:
    """A cancellation swallowed inside redis-py once left the bus's subscription syncer waiting,
    so every replica on Redis took 15 s to stop (and rolling restarts took that much longer)."""
    port = free_port()
    env = {"AUTH_DEV": "1", "AUTH_DATA_DIR": str(tmp_path), "AUTH_PORT": str(port)}
    with service("auth_service", {**env, "REDIS_URL": redis_url}, port, tmp_path) as proc:
        proc.send(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0, proc.tail()
