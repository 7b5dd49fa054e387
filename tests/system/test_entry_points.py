"""`--help` on every entry point prints its usage and exits 0, starting nothing: before, `python -m
services --help` started the stack, `python -m ws_service --help` printed its REDIS_URL error and the
healthcheck took `--help` for a URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.services import free_port
from tests.system.procs import service

pytestmark = pytest.mark.system

ENTRY_POINTS = [
    "services",
    "auth_service",
    "ws_service",
    "services.healthcheck",
    "realtime_gateway_client.chat",
    "tests.bench",
    "tests.bench.history",
    "tests.soak.run",
]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_help_prints_usage_and_starts_nothing(tmp_path: Path, module: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_", "WS_", "REDIS_"))}
    env.update({"AUTH_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)})
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"usage: python -m {module}"), result.stdout
    assert result.stderr == ""
    assert list(tmp_path.iterdir()) == [], "nothing was created"


def test_the_chat_help_keeps_its_examples_on_their_own_lines() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "realtime_gateway_client.chat", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = result.stdout.splitlines()
    assert "    python -m realtime_gateway_client.chat --user alice      # terminal 1" in lines


@pytest.mark.parametrize(
    ("module", "variables", "fix"),
    [
        ("auth_service", {"AUTH_HOST": "10.0.0.999"}, "check AUTH_HOST and AUTH_PORT"),
        ("auth_service", {"AUTH_LOG_LEVEL": "verbose"}, "AUTH_LOG_LEVEL must be one of"),
        ("ws_service", {"WS_HOST": "10.0.0.999", "WS_LOCAL_BUS": "1"}, "check WS_HOST and WS_PORT"),
        ("ws_service", {"LOG_LEVEL": "verbose"}, "LOG_LEVEL must be one of"),
    ],
)
def test_a_service_that_cannot_start_says_why_in_one_json_line(
    tmp_path: Path, module: str, variables: dict[str, str], fix: str
) -> None:
    """An address no interface has was told to change the port; an unknown log level was a
    plain-text traceback (an outside probe)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_", "WS_", "REDIS_"))}
    env.update({"AUTH_DEV": "1", "AUTH_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)})
    env.update(variables)
    result = subprocess.run(
        [sys.executable, "-m", module],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode in (1, 2), result.stderr
    last = json.loads(result.stderr.splitlines()[-1])
    assert last["level"] == "error" and fix in last["msg"], last
    assert "Traceback" not in result.stderr


async def test_an_inherited_prometheus_multiproc_dir_is_ignored(tmp_path: Path) -> None:
    """prometheus_client reads it at import: one naming a missing directory made the service's
    start a traceback (an outside probe). The service keeps its workers' metrics itself."""
    port = free_port()
    env = {
        "AUTH_DEV": "1",
        "AUTH_DATA_DIR": str(tmp_path / "data"),
        "AUTH_PORT": str(port),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing"),
    }
    with service("auth_service", env, port, tmp_path) as proc:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            assert resp.status == 200
            assert "auth_logins_total" in await resp.text()
    log = proc.log_path.read_text()
    assert "Traceback" not in log
    assert "PROMETHEUS_MULTIPROC_DIR is ignored" in log
    assert not (tmp_path / "missing").exists()
