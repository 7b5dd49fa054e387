"""The management commands as a newcomer runs them: beside `make run` they need no variables,
elsewhere they say what to set; `secret` keeps one secret for every later shell."""

from __future__ import annotations

import concurrent.futures
import io
import os
from pathlib import Path

import pytest

from auth_service.__main__ import main
from auth_service.settings import SECRET_FILE, Settings
from shared.config.env import ConfigError
from shared.config.kept_secret import kept_secret


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AUTH_DEV", "AUTH_KEY_ENCRYPTION_SECRETS", "AUTH_DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AUTH_DATA_DIR", str(tmp_path))


def test_commands_use_the_dev_secret_make_run_keeps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / SECRET_FILE).write_text("a-dev-secret-made-by-make-run-0123")
    assert main(["keys", "list"]) == 0
    assert capsys.readouterr().err == (
        f"auth_service: database sqlite:///{tmp_path}/auth.db (SQLite, as `make run` uses; "
        "AUTH_DATABASE_URL names another)\n"
    )


@pytest.mark.parametrize(
    "command",
    [["users", "create", "ghost"], ["keys", "list"], ["keys", "rotate"], ["outbox", "list"]],
)
def test_every_command_names_its_database_first(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    """A command run without the PostgreSQL variables acts on the SQLite file: it says so before
    anything else (the ghost user of the first-hour report went there unnoticed)."""
    (tmp_path / SECRET_FILE).write_text("a-dev-secret-made-by-make-run-0123")
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
    assert main(command) == 0
    first = capfd.readouterr().err.splitlines()[0]
    assert first.startswith(f"auth_service: database sqlite:///{tmp_path}/auth.db (SQLite")


def test_elsewhere_the_error_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "list"]) == 2
    assert "AUTH_KEY_ENCRYPTION_SECRETS is required" in capsys.readouterr().err
    (tmp_path / SECRET_FILE).write_text("a-dev-secret-made-by-make-run-0123")
    monkeypatch.setenv("AUTH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    assert main(["keys", "list"]) == 2, "never the dev secret on a database it did not make"
    assert not (tmp_path / "auth.db").exists()


def test_secret_is_created_once_and_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["secret"]) == 0
    first = capsys.readouterr()
    assert f"created a key-encryption secret in {tmp_path / SECRET_FILE}" in first.err
    assert main(["secret"]) == 0
    second = capsys.readouterr()
    assert second.out == first.out and len(first.out.strip()) >= 32
    assert f"using the key-encryption secret kept in {tmp_path / SECRET_FILE}" in second.err
    assert (tmp_path / SECRET_FILE).stat().st_mode & 0o777 == 0o600


def test_make_run_and_the_postgresql_path_share_one_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make run` (AUTH_DEV=1) and `export AUTH_KEY_ENCRYPTION_SECRETS=$(... secret)` must open
    the same keys: a database either one started on stays readable to the other."""
    dev = Settings.from_env({"AUTH_DEV": "1", "AUTH_DATA_DIR": str(tmp_path)})
    assert main(["secret"]) == 0
    assert capsys.readouterr().out.strip() == dev.key_encryption_secrets[0]
    assert dev.secrets_source == f"{tmp_path / SECRET_FILE} (AUTH_DEV=1)"


def test_an_older_checkouts_dev_secret_becomes_the_one_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "dev-key-encryption-secret").write_text("an-older-make-run-dev-secret-0123")
    assert main(["secret"]) == 0
    assert capsys.readouterr().out.strip() == "an-older-make-run-dev-secret-0123"
    assert not (tmp_path / "dev-key-encryption-secret").exists()


def test_secret_in_a_directory_it_cannot_make_says_so_in_a_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was a FileNotFoundError traceback (an outside probe)."""
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("AUTH_DATA_DIR", str(tmp_path / "a-file" / "data"))
    assert main(["secret"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"auth_service: cannot keep a secret in {tmp_path / 'a-file' / 'data' / SECRET_FILE}: "
        "Not a directory",
        "auth_service: set AUTH_DATA_DIR to a directory you can write",
    ]


def test_an_empty_kept_secret_is_an_error_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A crash (or a second process reading) between the file's creation and its write left it
    empty, and every later run printed and used an empty secret (an outside probe)."""
    (tmp_path / SECRET_FILE).write_text("\n")
    monkeypatch.setenv("AUTH_DATA_DIR", str(tmp_path))
    assert main(["secret"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{tmp_path / SECRET_FILE} is empty" in captured.err


def test_a_kept_secret_appears_whole_and_is_the_same_for_every_racing_process(
    tmp_path: Path,
) -> None:
    """Written aside and linked into place: no reader ever sees the file empty."""
    path = tmp_path / "data" / SECRET_FILE
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: kept_secret(path), range(32)))
    assert len({secret for secret, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert os.listdir(path.parent) == [SECRET_FILE], "nothing left aside"
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


def test_serving_from_a_data_dir_it_cannot_make_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``AUTH_DEV=1`` with such an ``AUTH_DATA_DIR``: a traceback before (an outside probe)."""
    (tmp_path / "a-file").write_text("")
    environ = {"AUTH_DEV": "1", "AUTH_DATA_DIR": str(tmp_path / "a-file" / "data")}
    with pytest.raises(ConfigError, match=r"cannot keep a secret in .*: Not a directory"):
        Settings.from_env(environ)


def test_a_kept_secret_on_a_file_system_without_hard_links_is_still_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vfat, exFAT, some SMB mounts: ``os.link`` fails there, and dev mode would not start on
    such a data dir (an outside probe); the file is then created in place, as before."""

    def no_link(*_: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    path = tmp_path / SECRET_FILE
    secret, created = kept_secret(path)
    assert created and path.read_text() == secret
    assert kept_secret(path) == (secret, False)
    assert os.listdir(tmp_path) == [SECRET_FILE]
