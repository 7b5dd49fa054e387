"""What a newcomer meets in the first hour, with real processes: one line where a traceback was,
a key rotation that reaches the running service at once, a chat that says what happens."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jwt
import pytest

from tests.services import free_port
from tests.system.procs import run_cli, service
from tests.system.readme_walk import Terminal

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_", "WS_", "REDIS_"))}
    return {**env, "AUTH_DATA_DIR": str(tmp_path), **extra}


def post(url: str, body: dict[str, object], token: str | None = None) -> dict[str, object]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        result: dict[str, object] = json.loads(response.read())
    return result


@pytest.mark.parametrize("module", ["services", "auth_service", "ws_service"])
def test_a_port_in_use_is_one_line(tmp_path: Path, module: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = str(free_port())
        ports = (
            {"AUTH_PORT": other, "WS_PORT": str(port), "WS_LOCAL_BUS": "1"}
            if module == "ws_service"
            else {}
        )
        env = env_for(tmp_path, AUTH_DEV="1", **{"AUTH_PORT": str(port), "WS_PORT": other, **ports})
        result = subprocess.run(
            [sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert f"127.0.0.1:{port} is already in use" in last, result.stderr
    if module != "ws_service":
        assert "`make run` running?" in last
    assert "Traceback" not in result.stderr + result.stdout
    assert "listening" not in result.stdout, "listening is said only after the bind"
    if module != "ws_service":
        assert not (tmp_path / "auth.db").exists(), "the port is checked before the database"


def test_an_immediate_rotation_signs_at_once_on_the_running_service(tmp_path: Path) -> None:
    port = free_port()
    env = env_for(tmp_path, AUTH_DEV="1", AUTH_PORT=str(port))
    base = f"http://127.0.0.1:{port}"
    with service("auth_service", env, port, tmp_path):
        post(f"{base}/v1/register", {"username": "alice", "password": PASSWORD})
        started = time.monotonic()
        out = run_cli("auth_service", ["keys", "rotate", "--immediate"], {**env, "AUTH_DEV": ""})
        new_kid = out.split()[2]
        assert "a running service took the announcement" in out, out
        while True:
            tokens = post(f"{base}/v1/login", {"username": "alice", "password": PASSWORD})
            if jwt.get_unverified_header(str(tokens["access_token"]))["kid"] == new_kid:
                break
            assert time.monotonic() - started < 5, "the old key still signs"
            time.sleep(0.1)


def test_the_chat_says_when_the_connection_drops_and_exits_on_revocation(tmp_path: Path) -> None:
    auth_port, ws_port = free_port(), free_port()
    env = env_for(tmp_path, AUTH_PORT=str(auth_port), WS_PORT=str(ws_port))
    base = f"http://127.0.0.1:{auth_port}"
    chat_cmd = [sys.executable, "-m", "realtime_gateway_client.chat", "--user", "bob"]
    with service("services", env, ws_port, tmp_path):
        post(f"{base}/v1/register", {"username": "bob", "password": PASSWORD})
        chat = Terminal(chat_cmd, {**env, "CHAT_PASSWORD": PASSWORD}, ROOT)
        chat.wait_for("* connected as bob", timeout=20)
    chat.wait_for("* connection lost (1001", timeout=10)
    chat.wait_for("reconnecting in", timeout=10)
    with service("services", env, ws_port, tmp_path):
        chat.wait_for("* reconnected as bob on chat:lobby", timeout=30)
        tokens = post(f"{base}/v1/login", {"username": "bob", "password": PASSWORD})
        post(f"{base}/v1/logout", {"all": True}, str(tokens["access_token"]))
        assert chat.finish(timeout=10) == 1
    assert "chat: the session ended (session_revoked): log in again" in chat.output
    assert "Traceback" not in chat.output


def test_the_chat_with_the_server_down_is_one_line(tmp_path: Path) -> None:
    env = env_for(tmp_path, AUTH_PORT=str(free_port()), CHAT_PASSWORD=PASSWORD)
    result = subprocess.run(
        [sys.executable, "-m", "realtime_gateway_client.chat", "--user", "bob"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("chat: cannot reach auth_service at http://127.0.0.1:")
    assert len(result.stderr.splitlines()) == 1, result.stderr


QUIT_NOISE = ("Traceback", "Unclosed", "Task was destroyed", "Exception ignored")
"""What a chat that did not close cleanly leaves on the terminal."""


def ctrl_c(chat: Terminal) -> str:
    """Ctrl-C once: the chat must exit cleanly (a second Ctrl-C used to be needed)."""
    chat.type("\x03")
    assert chat.finish(timeout=15) == 0, chat.output
    for noise in QUIT_NOISE:
        assert noise not in chat.output, chat.output
    return chat.output


def test_ctrl_c_quits_the_chat_at_the_prompt_and_while_logging_in(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections, never answers: a login that hangs
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        env = env_for(tmp_path)
        chat_cmd = [sys.executable, "-m", "realtime_gateway_client.chat", "--user", "bob"]
        chat_cmd += ["--auth-url", f"http://127.0.0.1:{silent.getsockname()[1]}"]
        prompt = Terminal(chat_cmd, env, ROOT)
        prompt.wait_for("password for bob: ", timeout=20)
        ctrl_c(prompt)
        logging_in = Terminal(chat_cmd, {**env, "CHAT_PASSWORD": PASSWORD}, ROOT)
        silent.settimeout(20)
        connection, _ = silent.accept()  # the login request is on its way, never answered
        with connection:
            ctrl_c(logging_in)


def test_ctrl_c_quits_the_chat_once_messages_arrived_and_while_reconnecting(
    tmp_path: Path,
) -> None:
    auth_port, ws_port = free_port(), free_port()
    env = env_for(tmp_path, AUTH_PORT=str(auth_port), WS_PORT=str(ws_port))
    base = f"http://127.0.0.1:{auth_port}"
    chat_env = {**env, "CHAT_PASSWORD": PASSWORD}
    chat_cmd = [sys.executable, "-m", "realtime_gateway_client.chat", "--user"]
    with service("services", env, ws_port, tmp_path):
        for user in ("bob", "carol"):
            post(f"{base}/v1/register", {"username": user, "password": PASSWORD})
        bob = Terminal([*chat_cmd, "bob"], chat_env, ROOT)
        carol = Terminal([*chat_cmd, "carol"], chat_env, ROOT)
        bob.wait_for("* connected as bob", timeout=20)
        carol.wait_for("* connected as carol", timeout=20)
        carol.type("hello bob\n")
        bob.wait_for("carol: hello bob", timeout=10)
        ctrl_c(bob)
    carol.wait_for("reconnecting in", timeout=10)
    ctrl_c(carol)
