"""The strict wire codec: what it refuses, and that whatever it accepts re-encodes as browser JSON.

Every test runs twice: with orjson's fast path (the servers) and with the standard library alone
(a client without orjson); the differential tests check that both decide every input alike."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime_gateway_protocol import wire_json
from realtime_gateway_protocol.wire_json import MAX_DEPTH, WireJSONError, check, dumps, loads


@pytest.fixture(autouse=True, params=["orjson", "stdlib"])
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "stdlib":
        monkeypatch.setattr(wire_json, "_orjson", None)
    else:
        assert wire_json._orjson is not None, "the servers' environment installs orjson"
    return str(request.param)


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
        ('{"x": "\\udc00\\ud800"}', "lone surrogates"),
        ("[" * 1000 + "]" * 1000, "nested"),
        ("1" * 5000, "numbers must be finite"),
        ('{"x": ' + "9" * 400 + "}", "numbers must be finite"),
        ('{"x": [-' + "9" * 310 + "]}", "numbers must be finite"),
    ],
)
def test_refuses_what_browsers_cannot_read(text: str, reason: str) -> None:
    with pytest.raises(WireJSONError, match=reason):
        loads(text)


def test_integers_end_where_a_browser_reads_infinity() -> None:
    """JSON.parse reads numbers as doubles: the largest one, written as an integer, is still a
    number, the next integer is Infinity (and null once a browser re-encodes it)."""
    largest = int(sys.float_info.max)
    assert loads(f"[{largest}, {-largest}]") == [largest, -largest]
    for beyond in (largest + 1, -largest - 1):
        with pytest.raises(WireJSONError, match="numbers must be finite"):
            loads(f'{{"data": {beyond}}}')
        with pytest.raises(WireJSONError, match="numbers must be finite"):
            check({"data": [beyond]})
    assert loads(str(2**64)) == 2**64  # past orjson's 64 bits, well within a double: exact


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_check_holds_another_parsers_output_to_the_same_rules(number: float) -> None:
    """pyjwt decodes a token's JSON with the standard library's defaults: NaN, Infinity and a
    lone surrogate come through, and ``check`` then refuses them as ``loads`` would have."""
    with pytest.raises(WireJSONError, match="numbers must be finite"):
        check(json.loads(json.dumps({"exp": [number]})))
    with pytest.raises(WireJSONError, match="lone surrogates"):
        check(json.loads('{"jti": "\\ud800"}'))
    check({"exp": 1.5, "iat": 1})


def test_invalid_utf8_bytes_are_refused() -> None:
    with pytest.raises(WireJSONError, match="UTF-8"):
        loads(b'{"x": "\xff"}')


def test_nesting_at_the_limit_is_accepted() -> None:
    text = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert dumps(loads(text)) == text


def test_surrogates_can_be_kept_for_field_level_checks() -> None:
    value = loads('{"token": "\\ud800"}', allow_surrogates=True)
    assert value == {"token": "\ud800"}
    assert dumps(value) == '{"token":"\\ufffd"}', "never written on: U+FFFD in its place"


def _replaced(value: Any) -> Any:
    """``value`` with every lone surrogate as U+FFFD (a pair as the character it makes)."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if isinstance(value, list):
        return [_replaced(item) for item in value]
    if isinstance(value, dict):
        return {_replaced(key): _replaced(item) for key, item in value.items()}
    return value


_TRICKY = st.lists(
    st.sampled_from(["a", "u", "d", "8", "c", "\\", '"', "\ud800", "\udcff", "\ud83d", "\ude00",
                     "\U0001f600", "\ufffd", "\x7f"]),
    max_size=12,
).map("".join)  # fmt: skip
"""Strings made of what the replacement must tell apart: lone surrogates of both halves, a
pair split or whole, a backslash before ``ud...`` text, quotes."""


@given(st.dictionaries(_TRICKY, _TRICKY | st.lists(_TRICKY, max_size=3), max_size=4))
def test_what_dumps_writes_loads_reads(value: dict[str, Any]) -> None:
    """A lone surrogate (a header's undecodable byte that a server copied into an answer or
    a log line) is written as U+FFFD; everything else reads back as it was."""
    encoded = dumps(value)
    assert encoded.isascii()
    assert loads(encoded) == _replaced(value)


def test_a_backslash_before_ud_text_is_text() -> None:
    assert dumps(["\\ud800", "\udcff", "\U0001f600"]) == '["\\\\ud800","\\ufffd","\\ud83d\\ude00"]'


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
    assert loads(encoded) == _replaced(value)


def test_integers_beyond_64_bits_stay_exact() -> None:
    """orjson makes them floats; the standard library's path keeps them as they were sent."""
    big = 2**64 + 1
    assert loads(f'{{"n": {big}, "m": [-{big}], "f": 1e19}}') == {"n": big, "m": [-big], "f": 1e19}
    assert loads(str(-(2**63) - 1)) == -(2**63) - 1


def test_lenient_members_may_hold_lone_surrogates() -> None:
    assert loads('{"token": "\\ud800", "x": 1}', lenient={"token"}) == {"token": "\ud800", "x": 1}
    with pytest.raises(WireJSONError, match="lone surrogates"):
        loads('{"token": "ok", "x": "\\ud800"}', lenient={"token"})
    with pytest.raises(WireJSONError, match="lone surrogates"):
        loads('{"x": {"token": "\\ud800"}}', lenient={"token"})


def _decided(text: str | bytes, **options: Any) -> tuple[str, Any]:
    try:
        value = loads(text, **options)
    except WireJSONError as exc:
        return "refused", str(exc)
    return "accepted", dumps(value)  # the encoding tells an int from an equal float


def _both(text: str | bytes, **options: Any) -> None:
    fast = _decided(text, **options)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(wire_json, "_orjson", None)
        slow = _decided(text, **options)
    assert fast == slow


json_text = st.recursive(
    st.sampled_from(
        [
            "0",
            "-0",
            "1e19",
            "-1e400",
            "1E5",
            "01",
            "1.",
            ".5",
            "18446744073709551616",
            "-9223372036854775809",
            "NaN",
            "true",
            "null",
            '"\\ud800"',
            '"\\udc00"',
            '"\\ud83d\\ude00"',
            '"\\u0000"',
            '"\x01"',
            '"\u00e9"',
            "  ",
        ]
    ),
    lambda inner: (
        st.lists(inner, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]")
        | st.lists(
            st.tuples(st.sampled_from(['"a"', '"token"', '"\\udfff"']), inner), max_size=3
        ).map(lambda kv: "{" + ",".join(f"{k}:{v}" for k, v in kv) + "}")
    ),
    max_leaves=12,
)


@given(
    json_text,
    st.sampled_from([{}, {"allow_surrogates": True}, {"lenient": {"token"}}, {"max_depth": 2}]),
)
def test_orjson_and_the_standard_library_decide_alike(text: str, options: dict[str, Any]) -> None:
    _both(text, **options)


@given(st.text(max_size=60) | st.binary(max_size=60))
def test_any_input_is_decided_alike(data: str | bytes) -> None:
    _both(data)


@pytest.mark.parametrize(
    "text",
    [
        '{"allow": false, "allow": true}',
        '{"a": {"b": 1, "b": 1}}',
        '[{"x": 1}, {"y": 1, "y": 2}]',
        '{"a": 1, "\\u0061": 2}',
    ],
)
def test_unique_keys_refuses_an_object_naming_a_member_twice(text: str) -> None:
    """Each parser decides what a repeated name means; one that keeps the last read the app's
    ``{"allow": false, "allow": true}`` as an allow."""
    with pytest.raises(WireJSONError, match="names a member twice"):
        loads(text, unique_keys=True)
    assert loads(text) == json.loads(text), "without it, as before: the last one counts"


def test_unique_keys_keeps_every_other_rule() -> None:
    assert loads('{"a": {"b": [1, {"c": null}]}, "b": 2}', unique_keys=True) == {
        "a": {"b": [1, {"c": None}]},
        "b": 2,
    }
    for text in ('{"x": NaN}', '{"x": "\\ud800"}', "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)):
        with pytest.raises(WireJSONError):
            loads(text, unique_keys=True)
