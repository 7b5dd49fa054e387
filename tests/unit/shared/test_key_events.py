"""The key-announcement contract: what auth_service encodes, every receiver decodes, and nothing
else gets through."""

from __future__ import annotations

import pytest

from realtime_gateway_protocol.key_events import (
    KeyEvent,
    KeyRotated,
    KeyWithdrawn,
    decode_key_event,
    encode_key_event,
)

KID = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"  # an RFC 7638 thumbprint


@pytest.mark.parametrize("event", [KeyRotated(KID, 3), KeyWithdrawn(KID)])
def test_events_round_trip(event: KeyEvent) -> None:
    assert decode_key_event(encode_key_event(event)) == event


def test_the_payload_auth_service_published_before_this_module_still_decodes() -> None:
    payload = '{"type":"key_rotated","kid":"abc","generation":2}'
    assert decode_key_event(payload) == KeyRotated("abc", 2)


def test_members_a_newer_publisher_adds_are_ignored() -> None:
    payload = '{"type":"key_withdrawn","kid":"abc","reason":"leaked","at":1}'
    assert decode_key_event(payload) == KeyWithdrawn("abc")


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "not json",
        "[]",
        '"key_withdrawn"',
        "{}",
        '{"type":"key_withdrawn"}',
        '{"type":"key_withdrawn","kid":""}',
        '{"type":"key_withdrawn","kid":7}',
        '{"type":"key_withdrawn","kid":["a"]}',
        '{"type":"key_withdrawn","kid":"a b"}',
        '{"type":"key_withdrawn","kid":"a/../b"}',
        '{"type":"key_withdrawn","kid":"' + "a" * 129 + '"}',
        '{"type":"key_rotated","kid":"abc"}',
        '{"type":"key_rotated","kid":"abc","generation":"2"}',
        '{"type":"key_rotated","kid":"abc","generation":true}',
        '{"type":"key_rotated","kid":"abc","generation":0}',
        '{"type":"key_lost","kid":"abc"}',
        '{"kid":"abc"}',
        '{"type":"key_withdrawn","kid":"abc","pad":"' + "x" * 1024 + '"}',
        "[" * 1024,  # RecursionError before the payload was read strictly
        '{"type":"key_rotated","kid":"abc","generation":Infinity}',
    ],
)
def test_malformed_announcements_raise_value_error(payload: str) -> None:
    with pytest.raises(ValueError):
        decode_key_event(payload)
