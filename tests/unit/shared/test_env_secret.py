"""Secrets read from ``NAME`` or from the file ``NAME_FILE`` names (Docker and Kubernetes secrets)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.config.env import ConfigError, env_secret, env_secret_url, redact_url, split_list

SECRET = "f1le-secret-value-0123456789"


def secret_file(tmp_path: Path, text: str, name: str = "secret") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_the_variable_itself_when_no_file_is_named() -> None:
    assert env_secret({"TOKEN": f" {SECRET} "}, "TOKEN") == SECRET
    assert env_secret({}, "TOKEN") == ""
    assert env_secret({"TOKEN": "", "TOKEN_FILE": " "}, "TOKEN") == ""


@pytest.mark.parametrize("ending", ["", "\n", "\r\n", "\n\n"])
def test_the_file_without_its_trailing_line_break(tmp_path: Path, ending: str) -> None:
    path = secret_file(tmp_path, SECRET + ending)
    assert env_secret({"TOKEN_FILE": path}, "TOKEN") == SECRET


def test_an_empty_variable_beside_a_file_is_not_a_conflict(tmp_path: Path) -> None:
    path = secret_file(tmp_path, SECRET)
    assert env_secret({"TOKEN": "", "TOKEN_FILE": path}, "TOKEN") == SECRET


def test_both_set_is_an_error_that_names_both_and_shows_neither_value(tmp_path: Path) -> None:
    path = secret_file(tmp_path, SECRET)
    with pytest.raises(ConfigError, match="TOKEN and TOKEN_FILE are both set") as caught:
        env_secret({"TOKEN": "inline-secret-0123456789", "TOKEN_FILE": path}, "TOKEN")
    assert SECRET not in str(caught.value) and "inline-secret" not in str(caught.value)


def test_a_missing_file_names_the_variable_and_the_path(tmp_path: Path) -> None:
    path = str(tmp_path / "absent")
    with pytest.raises(ConfigError, match=f"TOKEN_FILE={path} cannot be read: No such file"):
        env_secret({"TOKEN_FILE": path}, "TOKEN")


def test_a_directory_is_not_a_secret_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"TOKEN_FILE={tmp_path} cannot be read"):
        env_secret({"TOKEN_FILE": str(tmp_path)}, "TOKEN")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_names_the_variable_and_the_path(tmp_path: Path) -> None:
    path = secret_file(tmp_path, SECRET)
    os.chmod(path, 0)
    with pytest.raises(ConfigError, match=f"TOKEN_FILE={path} cannot be read: Permission denied"):
        env_secret({"TOKEN_FILE": path}, "TOKEN")


@pytest.mark.parametrize("text", ["", "\n", "  \n"])
def test_an_empty_file_is_an_error_not_a_missing_secret(tmp_path: Path, text: str) -> None:
    path = secret_file(tmp_path, text)
    with pytest.raises(ConfigError, match=f"TOKEN_FILE={path} is empty"):
        env_secret({"TOKEN_FILE": path}, "TOKEN")


def test_a_binary_file_is_refused_without_quoting_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"\xffsecret-bytes")
    with pytest.raises(ConfigError, match="is not UTF-8 text") as caught:
        env_secret({"TOKEN_FILE": str(path)}, "TOKEN")
    assert "secret-bytes" not in str(caught.value) and "xff" not in str(caught.value)


def test_a_list_file_may_hold_one_item_per_line_or_a_comma_list() -> None:
    assert split_list("new-secret\nold-secret\n") == ("new-secret", "old-secret")
    assert split_list(" new-secret, old-secret ,,") == ("new-secret", "old-secret")


@pytest.mark.parametrize(
    ("url", "merged"),
    [
        ("redis://redis:6379/0", "redis://:p%40ss%3Aw%2Fd@redis:6379/0"),
        ("redis://user@redis:6379/0", "redis://user:p%40ss%3Aw%2Fd@redis:6379/0"),
        (
            "postgresql://gateway@db:5432/gateway?sslmode=require",
            "postgresql://gateway:p%40ss%3Aw%2Fd@db:5432/gateway?sslmode=require",
        ),
    ],
)
def test_a_password_is_merged_into_the_url_percent_encoded(
    tmp_path: Path, url: str, merged: str
) -> None:
    environ = {"DB_URL": url, "DB_PASSWORD_FILE": secret_file(tmp_path, "p@ss:w/d\n")}
    assert env_secret_url(environ, "DB_URL", "DB_PASSWORD") == merged
    assert "p%40ss" not in redact_url(merged)


def test_the_url_may_come_from_a_file_and_without_a_password_is_unchanged(tmp_path: Path) -> None:
    url = "postgresql://gateway:inline@db/gateway"
    environ = {"DB_URL_FILE": secret_file(tmp_path, url + "\n")}
    assert env_secret_url(environ, "DB_URL", "DB_PASSWORD") == url
    assert env_secret_url({}, "DB_URL", "DB_PASSWORD", "sqlite:///x.db") == "sqlite:///x.db"


def test_a_password_for_a_url_that_has_one_or_names_no_server_is_an_error() -> None:
    with pytest.raises(ConfigError, match="DB_URL already holds a password"):
        env_secret_url(
            {"DB_URL": "postgresql://u:inline@db/x", "DB_PASSWORD": "pw"}, "DB_URL", "DB_PASSWORD"
        )
    with pytest.raises(ConfigError, match="DB_PASSWORD is set but DB_URL names no server"):
        env_secret_url({"DB_PASSWORD": "pw"}, "DB_URL", "DB_PASSWORD", "sqlite:///x.db")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:s3cret@127.0.0.1:abc/db",
        "postgresql://u:s3cret@[::1:5432/db",
        "postgresql://u:s3cret@h:99999/db",
    ],
)
def test_a_url_whose_host_or_port_cannot_be_read_stops_start_up_naming_it(url: str) -> None:
    """The driver raised deep in start-up: a traceback, not the line naming the variable (an
    outside probe)."""
    with pytest.raises(ConfigError) as caught:
        env_secret_url({"DB_URL": url}, "DB_URL", "DB_PASSWORD")
    assert str(caught.value).startswith("DB_URL has an unreadable host or port")
    assert "s3cret" not in str(caught.value)
