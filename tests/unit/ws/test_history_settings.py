"""WS_HISTORY and WS_PRESENCE: per-namespace history policies and presence, never for user:."""

from __future__ import annotations

import pytest

from shared.config.env import ConfigError
from ws_service.domain.history import HistoryPolicy, Position, position_of, with_position
from ws_service.settings import Settings

BASE = {"WS_JWKS_URL": "http://keys.test/jwks", "WS_ISSUER": "http://auth.test"}


def test_defaults_keep_chat_history_and_presence_and_nothing_for_user() -> None:
    settings = Settings.from_env(BASE)
    assert settings.namespaces.of("chat:lobby").history == HistoryPolicy(100, 300.0)
    assert settings.namespaces.of("user:42").history is None
    assert (
        settings.namespaces.of("chat:lobby").presence
        and not settings.namespaces.of("user:42").presence
    )


def test_namespaces_are_configured_and_none_turns_them_off() -> None:
    settings = Settings.from_env(
        {**BASE, "WS_HISTORY": "chat=10/60, news=1000/3600", "WS_PRESENCE": "none"}
    )
    assert settings.namespaces.of("news:a").history == HistoryPolicy(1000, 3600.0)
    assert settings.namespaces.of("chat:a").history == HistoryPolicy(10, 60.0)
    assert not settings.namespaces.of("chat:a").presence
    assert Settings.from_env({**BASE, "WS_HISTORY": "none"}).namespaces.of("chat:a").history is None
    bounded = Settings.from_env({**BASE, "WS_HISTORY_MAX_BYTES": "1048576"})
    assert bounded.history_max_bytes == 1_048_576


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WS_HISTORY", "chat=100"),
        ("WS_HISTORY", "chat=x/3"),
        ("WS_HISTORY", "chat=0/3"),
        ("WS_HISTORY", "=1/3"),
        ("WS_HISTORY", "user=10/60"),
        ("WS_PRESENCE", "chat,user"),
        ("WS_HISTORY_MAX_BYTES", "1000"),
    ],
)
def test_bad_values_stop_start_up(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({**BASE, name: value})


@pytest.mark.parametrize(
    "value",
    ["chat=100/nan", "chat=100/inf", "chat=100/1e300", "chat=99999999999999999999/300"],
)
def test_a_history_policy_redis_or_the_store_cannot_keep_stops_start_up(value: str) -> None:
    """Each started before (an outside probe): a ttl of ``nan`` made every publish on the
    namespace fail (close 1011, 500 on /v1/publish), and on Redis a ttl or size past its 64-bit
    integers lost every message's history without a word and left the channel's keys without an
    expiry."""
    with pytest.raises(ConfigError, match="WS_HISTORY"):
        Settings.from_env({**BASE, "WS_HISTORY": value})


def test_a_position_is_read_back_only_where_it_was_appended() -> None:
    frame = '{"type":"message","data":{"a":1,"offset":5,"epoch":"zz"},"ts":1}'
    assert position_of(frame) is None
    assert position_of(with_position(frame, 7, "ab12")) == Position(7, "ab12")
    assert position_of('{"data":",\\"offset\\":1,\\"epoch\\":\\"a\\"}"}') is None
