"""The command line turns the domain's refusals into one line, never a traceback."""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace
from pathlib import Path

import pytest

from auth_service.__main__ import main
from auth_service.domain.errors import KeyRingError
from auth_service.domain.keyring import KeyRing
from auth_service.domain.models import User
from auth_service.domain.passwords import Passwords
from auth_service.settings import SECRET_FILE
from auth_service.store import open_store
from tests.unit.auth.conftest import PASSWORD


async def lose_the_race(self: KeyRing, now: float, *, immediate: bool = False) -> None:
    raise KeyRingError("another replica rotated at the same moment; try again")


def test_a_rotation_that_loses_a_race_prints_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTH_DEV", "1")
    monkeypatch.setenv("AUTH_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(KeyRing, "rotate", lose_the_race)
    assert main(["keys", "rotate"]) == 1
    err = capsys.readouterr().err
    assert (
        err.splitlines()[-1]
        == "auth_service: another replica rotated at the same moment; try again"
    )


async def seed_outbox(database_url: str) -> None:
    """Two events: the first waits, the second failed every attempt and is a dead letter."""
    store = await open_store(database_url)
    try:
        for payload in ("waiting", "poison"):
            await store.add_outbox("auth.revocations", payload, 0.0)
        dead = (await store.outbox_batch(10))[-1]
        await store.update_outbox(
            replace(dead, attempts=8, last_error="ValueError: malformed", dead_at=60.0)
        )
    finally:
        await store.close()


def test_outbox_lists_replays_and_drops_dead_letters_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTH_DEV", "1")
    monkeypatch.setenv("AUTH_DATA_DIR", str(tmp_path))
    asyncio.run(seed_outbox(f"sqlite:///{tmp_path / 'auth.db'}"))
    assert main(["outbox", "list"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "1 event(s) waiting, the oldest since 1970-01-01T00:00:00Z; 1 dead letter(s)",
        "2  topic=auth.revocations  created=1970-01-01T00:00:00Z  dead=1970-01-01T00:01:00Z  "
        "attempts=8  error=ValueError: malformed",
        "    payload=poison",
    ]
    assert main(["outbox", "drop", "1"]) == 1, "a waiting event is not a dead letter"
    assert capsys.readouterr().err.splitlines()[-1] == "auth_service: not dead letters: 1"
    assert main(["outbox", "replay"]) == 2
    assert main(["outbox", "replay", "2"]) == 0
    assert capsys.readouterr().out.startswith("1 dead letter(s) replayed")
    assert main(["outbox", "list"]) == 0
    assert capsys.readouterr().out.startswith("2 event(s) waiting")
    asyncio.run(seed_outbox(f"sqlite:///{tmp_path / 'auth.db'}"))
    assert main(["outbox", "drop", "4"]) == 0
    assert capsys.readouterr().out == "1 dead letter(s) dropped: 4\n"


def test_a_kid_that_starts_with_a_dash_is_a_kid_not_an_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One thumbprint in 64 starts with "-"; the command must take it as printed by keys list."""
    (tmp_path / SECRET_FILE).write_text("a-dev-secret-made-by-make-run-0123")
    monkeypatch.setenv("AUTH_DEV", "1")
    monkeypatch.setenv("AUTH_DATA_DIR", str(tmp_path))
    assert main(["keys", "revoke", "-Xk1Q"]) == 1
    assert capsys.readouterr().err.endswith(
        "auth_service: no signing key '-Xk1Q' (see `keys list`)\n"
    )
    assert main(["keys", "revoke", "--", "-Xk1Q"]) == 1


def test_keys_commands_under_a_secret_that_opens_no_stored_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped secret (an outside probe): ``revoke`` could not tell the signing key and
    withdrew it without a replacement (logins 503 until the services made one), and ``rotate
    --immediate`` said the new key signed from now while the running services, unable to decrypt
    it, went on signing with the old one. Now revoke refuses, and rotate warns."""
    monkeypatch.setenv("AUTH_DEV", "1")
    monkeypatch.setenv("AUTH_DATA_DIR", str(tmp_path))
    assert main(["keys", "rotate", "--immediate"]) == 0
    kid = capsys.readouterr().out.split()[2]
    monkeypatch.setenv("AUTH_KEY_ENCRYPTION_SECRETS", "another-secret-0123456789-abcdef")
    assert main(["keys", "revoke", kid]) == 1
    assert "decrypts none of the 1 signing key(s)" in capsys.readouterr().err
    assert main(["keys", "rotate", "--immediate"]) == 0, "the documented re-key still works"
    out = capsys.readouterr().out
    assert (
        "warning: the key-encryption secret from AUTH_KEY_ENCRYPTION_SECRETS decrypts none" in out
    )
    monkeypatch.delenv("AUTH_KEY_ENCRYPTION_SECRETS")
    assert main(["keys", "rotate"]) == 0
    assert "warning" not in capsys.readouterr().out, "a secret that opens a key: no warning"


def test_a_kid_is_echoed_quoted_never_raw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A line break or a terminal escape in the argument stays visible as text (an outside
    probe: ``keys revoke`` printed it raw, where the ``clients`` commands quote)."""
    monkeypatch.setenv("AUTH_DEV", "1")
    monkeypatch.setenv("AUTH_DATA_DIR", str(tmp_path))
    assert main(["keys", "revoke", "a\nb\x1b[31mred"]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err
    assert err.splitlines()[-1] == (
        "auth_service: no signing key 'a\\nb\\x1b[31mred' (see `keys list`)"
    )


def create_user(monkeypatch: pytest.MonkeyPatch, stdin: str, *args: str) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(["users", "create", *args])


@pytest.mark.parametrize("scope", ["chat:read\tx", "chat:read\u00a0admin:write", 'a"b', "a\\b"])
def test_users_create_refuses_a_scope_the_api_refuses(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    scope: str,
) -> None:
    """What the CLI grants lands in every token: a tab or U+00A0 read as a separator by
    ``str.split`` made ``chat:read\u00a0admin:write`` two scopes to a verifier (an outside
    probe). Spaces are the separator, as RFC 6749 section 3.3 says; the API already refused."""
    monkeypatch.setenv("AUTH_DEV", "1")
    monkeypatch.setenv("AUTH_DATA_DIR", str(tmp_path))
    assert create_user(monkeypatch, PASSWORD + "\n", "scoped", "--scope", scope) == 1
    assert "auth_service: a scope is space-separated printable ASCII" in capsys.readouterr().err
    assert create_user(monkeypatch, PASSWORD + "\n", "scoped", "--scope", " chat:read  a ") == 0
    assert asyncio.run(user_scope(tmp_path, "scoped")) == "chat:read a"


def test_users_create_reads_a_password_line_ending_in_crlf_without_the_cr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password file written on Windows: the user's password is the line, not the line and
    a carriage return no one can type (an outside probe: created, and no login worked)."""
    monkeypatch.setenv("AUTH_DEV", "1")
    monkeypatch.setenv("AUTH_DATA_DIR", str(tmp_path))
    assert create_user(monkeypatch, PASSWORD + "\r\n", "windows") == 0
    assert asyncio.run(password_works(tmp_path, "windows", PASSWORD))


async def stored_user(tmp_path: Path, username: str) -> User:
    store = await open_store(f"sqlite:///{tmp_path / 'auth.db'}")
    try:
        user = await store.get_user_by_username(username)
    finally:
        await store.close()
    assert user is not None
    return user


async def user_scope(tmp_path: Path, username: str) -> str:
    return (await stored_user(tmp_path, username)).scope


async def password_works(tmp_path: Path, username: str, password: str) -> bool:
    return await Passwords().verify((await stored_user(tmp_path, username)).password_hash, password)
