"""The frame parser and encoder: only ``BadRequest`` ever escapes, and output is always JSON."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime_gateway_protocol import wire_json
from ws_service.domain import protocol
from ws_service.domain.errors import BadRequest


def test_parse_accepts_a_typed_object_with_an_id() -> None:
    request = protocol.parse('{"type": "ping", "id": 3, "x": [1]}')
    assert (request.type, request.id, request.body["x"]) == ("ping", 3, [1])


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nope",
        "[]",
        '"ping"',
        "{}",
        '{"type": 1}',
        '{"type": "ping", "id": true}',
        '{"type": "ping", "id": 1.5}',
        '{"type": "ping", "id": {}}',
        '{"type": "ping", "x": NaN}',
        '{"type": "ping", "x": Infinity}',
        "[" * 100_000,
        '{"type": "ping", "n": ' + "9" * 5000 + "}",
    ],
)
def test_parse_refuses_everything_else(text: str) -> None:
    with pytest.raises(BadRequest):
        protocol.parse(text)


@given(st.text())
def test_parse_never_raises_anything_but_bad_request(text: str) -> None:
    with contextlib.suppress(BadRequest):
        request = protocol.parse(text)
        assert isinstance(request.type, str)


@given(st.text())
def test_message_frames_are_ascii_json_even_with_lone_surrogates(data: str) -> None:
    """ASCII, and JSON every strict reader takes: a lone surrogate is written as U+FFFD."""
    frame = protocol.message("chat:a", {"text": data + "\ud800"}, None, 1)
    frame.encode("ascii")
    assert wire_json.loads(frame)["data"]["text"] == data + "\ufffd"


def test_reply_includes_id_only_when_given() -> None:
    assert json.loads(protocol.reply("pong", None)) == {"type": "pong"}
    assert json.loads(protocol.reply("pong", "a")) == {"type": "pong", "id": "a"}
