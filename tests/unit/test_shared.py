from __future__ import annotations

import pytest

from realtime_gateway_protocol.events import SessionRevoked, UserRevoked, decode_event, encode_event
from shared.bus import InProcessBus
from shared.config.env import (
    ConfigError,
    env_bool,
    env_int,
    env_list,
    env_log_level,
    env_origins,
)


async def test_in_process_bus_delivers_same_payload_to_every_handler() -> None:
    bus = InProcessBus()
    seen: list[tuple[str, str]] = []
    other: list[str] = []
    bus.subscribe("a", lambda t, p: seen.append((t, p)))
    unsubscribe = bus.subscribe("a", lambda t, p: other.append(p))
    bus.subscribe("b", lambda t, p: seen.append((t, p)))
    payload = "x" * 10
    await bus.publish("a", payload)
    unsubscribe()
    await bus.publish("a", "second")
    assert seen == [("a", payload), ("a", "second")]
    assert other == [payload]
    assert other[0] is payload


async def test_failing_handler_does_not_stop_delivery() -> None:
    bus = InProcessBus()
    seen: list[str] = []

    def broken(topic: str, payload: str) -> None:
        raise RuntimeError("boom")

    bus.subscribe("t", broken)
    bus.subscribe("t", lambda t, p: seen.append(p))
    await bus.publish("t", "m")
    assert seen == ["m"]


@pytest.mark.parametrize(
    "event",
    [SessionRevoked(sid="s", sub="u", until=5), UserRevoked(sub="u", issued_before=3, until=9)],
)
def test_events_round_trip(event: SessionRevoked | UserRevoked) -> None:
    assert decode_event(encode_event(event)) == event


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "{}",
        '{"type":"nope"}',
        '{"type":"session_revoked"}',
        "[]",
        # OverflowError and RecursionError before the bus's payloads were read strictly:
        '{"type":"session_revoked","sid":"s","sub":"u","until":Infinity}',
        '{"type":"user_revoked","sub":"u","issued_before":NaN,"until":1}',
        '{"type":"session_revoked","sid":' + "[" * 2000 + "]" * 2000 + ',"sub":"u","until":1}',
    ],
)
def test_malformed_events_raise_value_error(payload: str) -> None:
    with pytest.raises(ValueError):
        decode_event(payload)


def test_env_parsing_names_the_variable() -> None:
    assert env_int({}, "X", 3) == 3
    assert env_int({"X": "7"}, "X", 3) == 7
    with pytest.raises(ConfigError, match="X must be an integer"):
        env_int({"X": "seven"}, "X", 3)
    with pytest.raises(ConfigError, match="at least 1"):
        env_int({"X": "0"}, "X", 3, minimum=1)
    assert env_bool({"B": "0"}, "B", True) is False
    with pytest.raises(ConfigError):
        env_bool({"B": "maybe"}, "B", True)
    assert env_list({"L": " a, b ,,"}, "L") == ("a", "b")
    assert env_log_level({}, "LOG_LEVEL") == "INFO"
    assert env_log_level({"LOG_LEVEL": "warning"}, "LOG_LEVEL") == "WARNING"
    with pytest.raises(ConfigError, match="LOG_LEVEL must be one of DEBUG, INFO"):
        env_log_level({"LOG_LEVEL": "verbose"}, "LOG_LEVEL")  # was a plain-text traceback
    with pytest.raises(ConfigError, match="at most 9"):
        env_int({"X": "10"}, "X", 3, maximum=9)


def test_origins_are_read_as_a_browser_spells_them_and_nothing_else_is_taken() -> None:
    """``*`` became a credentialed wildcard on auth_service's CORS (every origin reflected with
    Allow-Credentials), and a trailing slash made ws_service refuse the very page it named (an
    outside probe): an origin is scheme://host[:port], compared as the Origin header spells it."""
    given = (
        "HTTPS://App.Example.com/, https://a.example:443, http://[::1]:8080, http://b.example:80"
    )
    assert env_origins({"O": given}, "O") == (
        "https://app.example.com",
        "https://a.example",
        "http://[::1]:8080",
        "http://b.example",
    )
    for wrong in ("*", "null", "app.example.com", "https://app.example.com/chat", "ftp://x.example",
                  "https://user@app.example.com", "https://app.example.com:99999", "https://a?b"):  # fmt: skip
        with pytest.raises(ConfigError, match=r"O: .* is not an origin"):
            env_origins({"O": wrong}, "O")


def test_an_international_origin_is_read_in_the_ascii_form_a_browser_sends() -> None:
    """A browser's ``Origin`` names the host in its ASCII form (UTS 46, as the WHATWG URL
    standard has it): the page https://bücher.example sends ``https://xn--bcher-kva.example``.
    Written as the operator knows it, the origin was kept as it was, so that page was refused by
    both services (403 on the upgrade, cors_refused) though listed, and start-up said nothing (an
    outside probe). A host no browser can spell in ASCII stops start-up."""
    given = "https://bücher.example, https://STRASSE.example, https://straße.de:8443, http://例え.テスト"
    assert env_origins({"O": given}, "O") == (
        "https://xn--bcher-kva.example",
        "https://strasse.example",
        "https://xn--strae-oqa.de:8443",
        "http://xn--r8jz45g.xn--zckzah",
    )
    with pytest.raises(ConfigError, match=r"O: .* is not an origin"):
        env_origins({"O": "https://ex\u200bample.com"}, "O")
