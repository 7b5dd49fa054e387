"""The forwarded-address rule both services use, and the one JSON response writer."""

from __future__ import annotations

import math

import pytest
from multidict import CIMultiDict

from auth_service.settings import Settings as AuthSettings
from shared.config.env import ConfigError
from shared.http.forwarded import client_address, forwarded_for, trusted_proxies
from shared.http.responses import json_response
from ws_service.settings import Settings as WsSettings

REQUIRED: dict[str, dict[str, str]] = {
    "AUTH": {"AUTH_KEY_ENCRYPTION_SECRETS": "a-key-encryption-secret-0123456789"},
    "WS": {},
}


@pytest.mark.parametrize(
    ("peer", "header", "trusted", "address"),
    [
        ("10.0.0.9", "1.2.3.4", (), "10.0.0.9"),
        ("10.0.0.9", "1.2.3.4, 5.6.7.8", ("10.0.0.9",), "5.6.7.8"),
        ("10.0.0.9", "1.2.3.4", ("*",), "1.2.3.4"),
        ("10.0.0.9", "::1", ("*",), "::1"),
        ("10.0.0.9", "", ("*",), "10.0.0.9"),
        ("10.0.0.9", None, ("*",), "10.0.0.9"),
        ("10.0.0.9", "\udcff\udcfe", ("*",), "10.0.0.9"),
        ("10.0.0.9", "1.2.3.4, not-an-address", ("*",), "10.0.0.9"),
        (None, None, (), "unknown"),
        ("10.1.2.3", "1.2.3.4", ("10.0.0.0/8",), "1.2.3.4"),
        ("10.1.2.3", "1.2.3.4", ("10.0.0.0/16",), "10.1.2.3"),
        ("::ffff:10.1.2.3", "1.2.3.4", ("10.1.2.3",), "1.2.3.4"),
        ("fd00::5", "1.2.3.4", ("fd00::/64",), "1.2.3.4"),
        ("10.0.0.9", "1.2.3.4", ("proxy.internal",), "10.0.0.9"),
        # a proxy that appends the client's port (Azure Application Gateway, IIS ARR)
        ("10.0.0.9", "5.6.7.8, 1.2.3.4:5555", ("10.0.0.9",), "1.2.3.4"),
        ("10.0.0.9", "[2001:db8::1]:443", ("10.0.0.9",), "2001:db8::1"),
        ("10.0.0.9", "[2001:db8::1]", ("10.0.0.9",), "2001:db8::1"),
        ("10.0.0.9", "1.2.3.4:", ("10.0.0.9",), "10.0.0.9"),
        ("10.0.0.9", "1.2.3.4:port", ("10.0.0.9",), "10.0.0.9"),
        ("10.0.0.9", "1.2.3.4:99999", ("10.0.0.9",), "10.0.0.9"),
        ("10.0.0.9", "[1.2.3.4]:80", ("10.0.0.9",), "10.0.0.9"),
        ("10.0.0.9", "2001:db8::1:443", ("10.0.0.9",), "2001:db8::1:443"),
    ],
)
def test_client_address(
    peer: str | None, header: str | None, trusted: tuple[str, ...], address: str
) -> None:
    assert client_address(peer, header, trusted) == address


def test_every_forwarded_for_line_is_read_in_order() -> None:
    """RFC 9110 section 5.3: several lines of a field are one comma list; the last hop is the
    last line's, the one a proxy appending its own line added."""
    lines = CIMultiDict([("X-Forwarded-For", "203.0.113.7"), ("x-forwarded-for", "10.0.0.1")])
    assert forwarded_for(lines) == "203.0.113.7, 10.0.0.1"
    assert client_address("10.0.0.9", forwarded_for(lines), ("10.0.0.9",)) == "10.0.0.1"
    assert forwarded_for(CIMultiDict()) is None


@pytest.mark.parametrize("entry", ["proxy.internal", "10.0.0.0/33", "10.0.0.1 ", "", "1.2.3"])
def test_a_trusted_proxy_that_is_not_an_address_or_network_stops_start_up(entry: str) -> None:
    """Both services read their list through it: a host name or a typo never matched, and every
    client then shared the proxy's address."""
    with pytest.raises(ConfigError, match="AUTH_FORWARDED_ALLOW_IPS"):
        trusted_proxies(["10.0.0.0/8", entry], "AUTH_FORWARDED_ALLOW_IPS")
    assert trusted_proxies(["*", "10.0.0.0/8", "::1"], "X") == ("*", "10.0.0.0/8", "::1")
    for settings in (AuthSettings, WsSettings):
        prefix = "AUTH" if settings is AuthSettings else "WS"
        with pytest.raises(ConfigError, match=f"{prefix}_FORWARDED_ALLOW_IPS"):
            settings.from_env(
                {**REQUIRED[prefix], f"{prefix}_FORWARDED_ALLOW_IPS": "proxy.internal"}
            )


def test_json_response_is_strict_ascii_with_a_newline() -> None:
    response = json_response({"name": "ålice\ud800"}, status=201, headers={"X-A": "b"})
    assert response.status == 201 and response.headers["X-A"] == "b"
    assert response.content_type == "application/json"
    assert response.text == '{"name":"\\u00e5lice\\ufffd"}\n', "a lone surrogate never leaves"
    with pytest.raises(ValueError, match="not JSON compliant"):
        json_response({"x": math.nan})
