"""The forwarded-address rule both services use, and the one JSON response writer."""

from __future__ import annotations

import math

import pytest

from shared.http.forwarded import client_address
from shared.http.responses import json_response


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
    ],
)
def test_client_address(
    peer: str | None, header: str | None, trusted: tuple[str, ...], address: str
) -> None:
    assert client_address(peer, header, trusted) == address


def test_json_response_is_strict_ascii_with_a_newline() -> None:
    response = json_response({"name": "ålice\ud800"}, status=201, headers={"X-A": "b"})
    assert response.status == 201 and response.headers["X-A"] == "b"
    assert response.content_type == "application/json"
    assert response.text == '{"name":"\\u00e5lice\\ud800"}\n'
    with pytest.raises(ValueError, match="not JSON compliant"):
        json_response({"x": math.nan})
