"""Both services run with every secret read from a file, the way Docker and Kubernetes deliver
them, and no secret shows in /readyz, the logs, the process's command line or environment, or a
start-up error."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import pytest

from tests.services import create_schema, drop_schema, free_port
from tests.system.cluster import redis_server
from tests.system.procs import Proc, service

pytestmark = pytest.mark.system

SECRETS = {
    "AUTH_KEY_ENCRYPTION_SECRETS": "file-key-encryption-secret-0123",
    "AUTH_DATABASE_PASSWORD": "file-database-password-0123",
    "AUTH_METRICS_TOKEN": "file-auth-metrics-token-0123",
    "REDIS_PASSWORD": "file-redis-p@ss/word-0123",
    "WS_API_KEYS": "file-ws-api-key-0123456789",
    "WS_METRICS_TOKEN": "file-ws-metrics-token-0123",
}


@pytest.fixture
def secret_env(tmp_path: Path) -> dict[str, str]:
    """``NAME_FILE`` for every secret: one file each, ending in a line break as `echo` writes."""
    directory = tmp_path / "secrets"
    directory.mkdir()
    env = {}
    for name, value in SECRETS.items():
        path = directory / name.lower()
        path.write_text(value + "\n")
        env[f"{name}_FILE"] = str(path)
    return env


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[str]:
    """A private redis-server that refuses clients without the password: a REDIS_URL that works
    only once the password from the file is in it."""
    with redis_server(tmp_path, "--requirepass", SECRETS["REDIS_PASSWORD"]) as port:
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    url, schema = asyncio.run(create_schema())
    yield url
    asyncio.run(drop_schema(schema))


def assert_no_secret(where: str, text: str) -> None:
    for name, value in SECRETS.items():
        assert value not in text, f"{name} shows in {where}"
        assert value.replace("@", "%40").replace("/", "%2F") not in text, f"{name} in {where}"


def process_view(proc: Proc) -> str:
    """What `ps e`, `docker top` or a crash reporter sees of a process: its command line and
    environment."""
    assert proc.process is not None
    proc_dir = Path(f"/proc/{proc.process.pid}")
    return (proc_dir / "cmdline").read_bytes().decode() + (
        proc_dir / "environ"
    ).read_bytes().decode()


async def test_both_services_run_on_secrets_from_files_and_never_show_them(
    tmp_path: Path,
    secret_env: Mapping[str, str],
    redis_with_password: str,
    postgres_url: str,
) -> None:
    auth_port, ws_port = free_port(), free_port()
    auth_env = {
        **secret_env,
        "AUTH_PORT": str(auth_port),
        "AUTH_DATABASE_URL": postgres_url,
        "REDIS_URL": redis_with_password,
    }
    ws_env = {
        **secret_env,
        "WS_PORT": str(ws_port),
        "WS_ISSUER": f"http://127.0.0.1:{auth_port}",
        "WS_JWKS_URL": f"http://127.0.0.1:{auth_port}/.well-known/jwks.json",
        "REDIS_URL": redis_with_password,
    }
    with ExitStack() as stack:
        auth = stack.enter_context(service("auth_service", auth_env, auth_port, tmp_path))
        ws = stack.enter_context(service("ws_service", ws_env, ws_port, tmp_path))
        async with aiohttp.ClientSession() as http:
            for base in (f"http://127.0.0.1:{auth_port}", f"http://127.0.0.1:{ws_port}"):
                async with http.get(f"{base}/readyz") as resp:
                    body = await resp.text()
                assert resp.status == 200, body
                # The bus connected: Redis took the password from the file.
                assert '"degraded": {}' in body or '"degraded":{}' in body, body
                assert_no_secret(f"{base}/readyz", body)
            for port, name in ((auth_port, "AUTH_METRICS_TOKEN"), (ws_port, "WS_METRICS_TOKEN")):
                url = f"http://127.0.0.1:{port}/metrics"
                async with http.get(url) as resp:
                    assert resp.status == 401
                headers = {"Authorization": f"Bearer {SECRETS[name]}"}
                async with http.get(url, headers=headers) as resp:
                    assert resp.status == 200
            async with http.post(
                f"http://127.0.0.1:{ws_port}/v1/publish",
                json={"channel": "chat:secrets", "data": "hello"},
                headers={"Authorization": f"Bearer {SECRETS['WS_API_KEYS']}"},
            ) as resp:
                assert resp.status == 202, await resp.text()
        for proc in (auth, ws):
            assert_no_secret(f"{proc.name}'s command line or environment", process_view(proc))
    assert_no_secret("the logs", auth.tail(100_000) + ws.tail(100_000))


def start_up_error(module: str, env: Mapping[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", module],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_a_start_up_error_names_the_setting_but_never_shows_the_secret(
    secret_env: Mapping[str, str],
) -> None:
    closed = free_port()
    unreachable = start_up_error(
        "auth_service",
        {
            **secret_env,
            "AUTH_PORT": str(free_port()),
            "AUTH_DATABASE_URL": f"postgresql://gateway@127.0.0.1:{closed}/gateway",
            "REDIS_URL": f"redis://127.0.0.1:{closed}/0",
        },
    )
    assert "cannot connect to PostgreSQL" in unreachable
    assert_no_secret("auth_service's start-up error", unreachable)

    both = start_up_error(
        "ws_service",
        {**secret_env, "WS_API_KEYS": SECRETS["WS_API_KEYS"], "WS_LOCAL_BUS": "1"},
    )
    assert "WS_API_KEYS and WS_API_KEYS_FILE are both set" in both
    assert_no_secret("ws_service's start-up error", both)
