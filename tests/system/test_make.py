"""The Makefile as a newcomer meets it: `make run` stops cleanly, `make up` says what it needs."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.services import free_port
from tests.system.readme_walk import assert_json_but_the_banner

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parents[2]


def _make(target: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["make", "--no-print-directory", target],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def test_make_run_stops_on_ctrl_c_without_noise(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AUTH_", "WS_", "REDIS_"))},
        "AUTH_DATA_DIR": str(tmp_path),
        "AUTH_PORT": str(free_port()),
        "WS_PORT": str(free_port()),
    }
    proc = _make("run", env)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while "realtime gateway is up" not in "".join(lines):
        assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
        lines.append(proc.stdout.readline())
    # A terminal's ^C signals the whole foreground process group: make and the stack alike.
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=30)
    with proc.stdout:
        rest = proc.stdout.read()  # with what readline() buffered, which communicate() skips
    output = "".join(lines) + rest
    assert "Interrupt" not in output
    assert "Terminated" not in output
    assert "Traceback" not in output
    assert "exec .venv/bin/python" not in output, "make run echoes no command"
    assert_json_but_the_banner(output)


def test_make_up_without_compose_says_what_to_install() -> None:
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # no docker on this PATH
    result = subprocess.run(
        ["make", "--no-print-directory", "up"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "Compose v2" in result.stdout
    assert "docker-compose-plugin" in result.stdout
    assert "Error 125" not in result.stdout + result.stderr
