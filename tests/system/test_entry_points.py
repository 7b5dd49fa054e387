"""`--help` on every entry point prints its usage and exits 0, starting nothing: before, `python -m
services --help` started the stack, `python -m ws_service --help` printed its REDIS_URL error and the
healthcheck took `--help` for a URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
