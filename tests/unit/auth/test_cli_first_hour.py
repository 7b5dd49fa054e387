"""The management commands as a newcomer runs them: beside `make run` they need no variables,
elsewhere they say what to set; `secret` keeps one secret for every later shell."""

from __future__ import annotations

from pathlib import Path

import pytest

from auth_service.__main__ import main
from auth_service.settings import DEV_SECRET_FILE, SECRET_FILE


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AUTH_DEV", "AUTH_KEY_ENCRYPTION_SECRETS", "AUTH_DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AUTH_DATA_DIR", str(tmp_path))


def test_commands_use_the_dev_secret_make_run_keeps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / DEV_SECRET_FILE).write_text("a-dev-secret-made-by-make-run-0123")
    assert main(["keys", "list"]) == 0
    assert capsys.readouterr().err == ""


def test_elsewhere_the_error_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "list"]) == 2
    assert "AUTH_KEY_ENCRYPTION_SECRETS is required" in capsys.readouterr().err
    (tmp_path / DEV_SECRET_FILE).write_text("a-dev-secret-made-by-make-run-0123")
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
