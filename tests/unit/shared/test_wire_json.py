"""The strict wire codec: what it refuses, and that whatever it accepts re-encodes as browser JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime_gateway_protocol.wire_json import MAX_DEPTH, WireJSONError, dumps, loads

finite_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",))),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(st.characters(exclude_categories=("Cs",))), children, max_size=4)
    ),
    max_leaves=20,
)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"x": NaN}', "NaN is not JSON"),
        ('{"x": -Infinity}', "-Infinity is not JSON"),
        ('{"x": 1e400}', "numbers must be finite"),
        ('{"x": "\\ud800"}', "lone surrogates"),
        ('{"\\udfff": 1}', "lone surrogates"),
        ("[" * 5000 + "]" * 5000, "nested"),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), f"deeper than {MAX_DEPTH}"),
        ('{"x": 1', "not valid JSON"),
        ("1" * 5000, "not valid JSON"),
    ],
)
def test_refuses_what_browsers_cannot_read(text: str, reason: str) -> None:
    with pytest.raises(WireJSONError, match=reason):
        loads(text)


def test_invalid_utf8_bytes_are_refused() -> None:
    with pytest.raises(WireJSONError, match="UTF-8"):
        loads(b'{"x": "\xff"}')


def test_nesting_at_the_limit_is_accepted() -> None:
    text = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert dumps(loads(text)) == text


def test_surrogates_can_be_kept_for_field_level_checks() -> None:
    value = loads('{"token": "\\ud800"}', allow_surrogates=True)
    assert value == {"token": "\ud800"}
    assert dumps(value) == '{"token":"\\ud800"}'


def test_dumps_refuses_non_finite_numbers() -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        dumps({"x": float("inf")})


@given(finite_json)
def test_round_trip(value: Any) -> None:
    assert loads(dumps(value)) == value


@given(st.text(max_size=200))
def test_any_text_is_accepted_or_refused_cleanly(text: str) -> None:
    try:
        value = loads(text, allow_surrogates=True)
    except WireJSONError:
        return
    encoded = dumps(value)
    assert encoded.isascii()
    assert json.loads(encoded) == value
