"""`make run`'s banner says the stack is up only when both services are ready."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from services.embedded import Stack, build_stack
from shared.http.readiness import Readiness


def test_the_banner_says_what_is_not_ready() -> None:
    stack = Stack(
        [], ["chat page     http://127.0.0.1:8081/"], web.Application(), web.Application()
    )
    ready = Readiness({"database": "ok", "signing_key": "ok"})
    waiting = Readiness({"signing_keys": "not loaded yet from http://x/jwks"})
    up = stack.banner({"auth_service": ready, "ws_service": Readiness({"signing_keys": "ok"})})
    assert "realtime gateway is up" in up and "NOT ready" not in up
    down = stack.banner({"auth_service": ready, "ws_service": waiting})
    assert "realtime gateway is up" not in down
    assert "ws_service is NOT ready: signing_keys: not loaded yet from http://x/jwks" in down


def test_the_banner_shows_the_database_without_its_password(tmp_path: Path) -> None:
    password = tmp_path / "db-password"
    password.write_text("banner-db-password-0123\n")
    stack = build_stack(
        {
            "AUTH_DEV": "1",
            "AUTH_DATA_DIR": str(tmp_path),
            "AUTH_DATABASE_URL": "postgresql://gateway@db.internal:5432/gateway",
            "AUTH_DATABASE_PASSWORD_FILE": str(password),
        }
    )
    banner = stack.banner({})
    assert "database      postgresql://***@db.internal:5432/gateway" in banner
    assert "banner-db-password" not in banner


def test_the_banner_says_which_database_and_secret_are_in_use(tmp_path: Path) -> None:
    """Not "(embedded mode, dev keys)" whatever was set: the first-hour report ran on PostgreSQL
    with its own secret and still read that."""
    secret = tmp_path / "secret"
    secret.write_text("a-secret-kept-in-a-file-0123456789\n")
    environ = {
        "AUTH_DATA_DIR": str(tmp_path),
        "AUTH_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test",
        "AUTH_KEY_ENCRYPTION_SECRETS_FILE": str(secret),
        "WS_API_KEYS": "a-publish-key-0123456789",
    }
    banner = build_stack(environ).banner({})
    assert "realtime gateway is up (one process)\n" in banner
    assert "database      postgresql://***@127.0.0.1:5432/test\n" in banner
    assert (
        f"secret        key encryption from AUTH_KEY_ENCRYPTION_SECRETS_FILE={secret}\n" in banner
    )
    assert "users create bob   (and carol)   (with the AUTH_* variables this stack has)" in banner
    dev = build_stack({"AUTH_DEV": "1", "AUTH_DATA_DIR": str(tmp_path)}).banner({})
    assert "is up (one process, development mode: AUTH_DEV=1)" in dev
    assert "users create bob   (and carol)\n" in dev and "workers" not in dev
    assert f"database      sqlite:///{tmp_path}/auth.db\n" in dev
    assert f"from {tmp_path}/key-encryption-secret (AUTH_DEV=1)\n" in dev


def test_the_banner_says_worker_counts_are_not_used(tmp_path: Path) -> None:
    """make run is one process: AUTH_WORKERS and WS_WORKERS were ignored without a word."""
    environ = {
        "AUTH_DEV": "1",
        "AUTH_DATA_DIR": str(tmp_path),
        "AUTH_WORKERS": "2",
        "AUTH_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    banner = build_stack({**environ, "WS_WORKERS": "3"}).banner({})
    assert "workers       AUTH_WORKERS and WS_WORKERS not used: make run is one process" in banner


def test_the_try_it_commands_work_in_a_new_shell_with_this_stacks_data_dir_and_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``AUTH_DATA_DIR=... AUTH_PORT=9000 make run`` (the README suggests another port): the
    printed ``users create`` read ./.data and the chat reached 8081 (an outside probe)."""
    environ = {"AUTH_DEV": "1", "AUTH_DATA_DIR": str(tmp_path), "AUTH_PORT": "9000"}
    banner = build_stack({**environ, "WS_PORT": "9001"}).banner({})
    assert f"  AUTH_DATA_DIR={tmp_path} .venv/bin/python -m auth_service users create bob" in banner
    assert (
        ".venv/bin/python -m realtime_gateway_client.chat --user bob "
        "--auth-url http://127.0.0.1:9000 --ws-url ws://127.0.0.1:9001/ws   (and --user carol"
    ) in banner
    monkeypatch.chdir(tmp_path)  # the default data dir, ./.data, is made here
    default = build_stack({"AUTH_DEV": "1"}).banner({})
    assert "  .venv/bin/python -m auth_service users create bob   (and carol)\n" in default
    assert "chat --user bob   (and --user carol in another)" in default
