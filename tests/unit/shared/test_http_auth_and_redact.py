"""Small helpers both services share: Bearer parsing and URL redaction."""

from __future__ import annotations

import pytest

from shared.config.env import redact_url
from shared.http.auth import bearer_token


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Bearer ", None),
        ("Basic abc", None),
        ("abc", None),
        ("", None),
        (None, None),
        ("Bearer a b", None),
        ("Bearer caf\udcc3\udca9", None),
        ("Bearer café", None),
        ("Bearer a\x00b", None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:secret@host:6379/0", "redis://***@host:6379/0"),
        ("postgresql://u:p@w@db/x", "postgresql://***@db/x"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("", ""),
        ("not a url @ all", "not a url @ all"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
