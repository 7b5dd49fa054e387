"""The command line turns the domain's refusals into one line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from auth_service.__main__ import main
from auth_service.domain.errors import KeyRingError
from auth_service.domain.keyring import KeyRing
from auth_service.settings import DEV_SECRET_FILE


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
    assert err == "auth_service: another replica rotated at the same moment; try again\n"


def test_a_kid_that_starts_with_a_dash_is_a_kid_not_an_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One thumbprint in 64 starts with "-"; the command must take it as printed by keys list."""
    (tmp_path / DEV_SECRET_FILE).write_text("a-dev-secret-made-by-make-run-0123")
    monkeypatch.setenv("AUTH_DEV", "1")
    monkeypatch.setenv("AUTH_DATA_DIR", str(tmp_path))
    assert main(["keys", "revoke", "-Xk1Q"]) == 1
    assert capsys.readouterr().err == "auth_service: no signing key -Xk1Q (see `keys list`)\n"
    assert main(["keys", "revoke", "--", "-Xk1Q"]) == 1
