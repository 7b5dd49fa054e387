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
        ("redis://h:6379/0?password=secret&db=1", "redis://h:6379/0?password=***&db=1"),
        (
            "postgresql://db/x?sslmode=require&PassWord=s%40",
            "postgresql://db/x?sslmode=require&PassWord=***",
        ),
        (
            "redis+sentinel://:d@h1,h2/m?sentinel_password=s&db=2",
            "redis+sentinel://***@h1,h2/m?sentinel_password=***&db=2",
        ),
        (
            "http://u:p@app:8000/allow?api_key=k1&x=1&token=t&sig=s",
            "http://***@app:8000/allow?api_key=***&x=1&token=***&sig=***",
        ),
        (
            "https://fn.azurewebsites.net/api/allow?code=k1==&x=1&pwd=p&pass=q",
            "https://fn.azurewebsites.net/api/allow?code=***&x=1&pwd=***&pass=***",
        ),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
