"""The one JSON codec for everything that crosses the wire (HTTP bodies, WebSocket frames).

Python's ``json`` accepts what no browser does: ``NaN``/``Infinity``, ``1e400`` (parsed as
``inf``), an integer of 400 digits (exact in Python, ``Infinity`` to ``JSON.parse``), lone UTF-16
surrogates (``"\\ud800"``), and nesting hundreds deep that later fails to re-encode. One user's
frame must never break a channel for everyone, so every decoder here is strict and every encoder
refuses non-finite numbers.

Standard library only, as the clients use it too; where ``orjson`` is installed (the servers) it
parses first. It already refuses NaN, Infinity, ``1e400``, lone surrogates and invalid UTF-8, so
what it accepts needs only the depth walk (over containers, skipping strings), and whatever it
refuses, or turns from an integer beyond 64 bits into a float, goes through the standard
library's path: the result, or the reason for a refusal, is the same either way.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Collection
from typing import Any

try:
    import orjson as _orjson
except ImportError:  # a client without the servers' fast path
    _orjson = None  # type: ignore[assignment]

__all__ = ["MAX_DEPTH", "WireJSONError", "check", "dumps", "loads", "without_lone_surrogates"]

MAX_DEPTH = 32
"""Nesting allowed in a document: deep enough for any real payload, far below the recursion limit."""


class WireJSONError(ValueError):
    """The input is not JSON this system accepts; ``str(error)`` says why, for the client."""


_INFINITE = "numbers must be finite"

_LARGEST = sys.float_info.max
"""An integer beyond this is infinite to every reader that parses numbers as doubles, as
``JSON.parse`` does: ``1`` followed by 400 zeros reads ``Infinity`` in a browser."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise WireJSONError(_INFINITE)
    return value


def _constant(name: str) -> Any:
    raise WireJSONError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_float=_finite, parse_constant=_constant)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise WireJSONError("an object names a member twice")
    return value


_UNIQUE_DECODER = json.JSONDecoder(
    parse_float=_finite, parse_constant=_constant, object_pairs_hook=_unique
)


def loads(
    data: str | bytes,
    *,
    max_depth: int = MAX_DEPTH,
    allow_surrogates: bool = False,
    lenient: Collection[str] = (),
    unique_keys: bool = False,
) -> Any:
    """Parse strict JSON (RFC 8259, UTF-8, finite numbers, bounded depth).

    ``allow_surrogates`` keeps lone surrogates in strings for callers that validate every field
    they use and only ever re-encode with :func:`dumps` (which escapes them); ``lenient`` does so
    for the named members of a top-level object only: a WebSocket frame whose token holds one is
    then an invalid token, not a malformed frame.

    ``unique_keys`` refuses an object that names a member twice (RFC 8259 section 4 leaves what
    it means to each parser: ``{"allow": false, "allow": true}`` is an allow here and a refusal
    to a parser that keeps the first), for what is read as it is rather than re-encoded: request
    bodies, a proxy's answer. It takes the standard library's path (orjson keeps the last).
    """
    if _orjson is not None and not unique_keys:
        try:
            value = _orjson.loads(data)
        except _orjson.JSONDecodeError:
            pass  # the standard library's path decides, and says why
        else:
            if _within(value, max_depth):
                return value
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise WireJSONError("the body is not valid UTF-8") from None
    try:
        value = (_UNIQUE_DECODER if unique_keys else _DECODER).decode(data)
    except WireJSONError:
        raise
    except RecursionError:
        raise WireJSONError("JSON nested too deeply") from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # past sys.get_int_max_str_digits()
            raise WireJSONError(_INFINITE) from None
        raise WireJSONError("not valid JSON") from None
    if lenient and isinstance(value, dict) and not allow_surrogates:
        check(value, max_depth=max_depth, allow_surrogates=True)
        check({k: v for k, v in value.items() if k not in lenient}, max_depth=max_depth)
    else:
        check(value, max_depth=max_depth, allow_surrogates=allow_surrogates)
    return value


_BEYOND_INT64 = float(2**63)


def _within(value: Any, max_depth: int) -> bool:
    """Whether what orjson decoded stands as it is: False when it is nested deeper than
    ``max_depth`` (the standard library's path then says why, as it always has) or when a number
    may be an integer beyond 64 bits that orjson made a float (that path keeps it exact).
    Strings are not looked at: orjson refused every lone surrogate."""
    if not isinstance(value, dict | list):
        return not (type(value) is float and abs(value) >= _BEYOND_INT64)
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth >= max_depth:
            return False
        for child in item.values() if type(item) is dict else item:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif kind is float and abs(child) >= _BEYOND_INT64:
                return False
    return True


def check(value: Any, *, max_depth: int = MAX_DEPTH, allow_surrogates: bool = False) -> None:
    """Raise :class:`WireJSONError` unless ``value`` (already decoded) is within ``max_depth``,
    holds no integer beyond a double's range, no NaN or infinity and, unless allowed, no lone
    surrogate. One iterative walk: no recursion for an attacker to exhaust. It holds what another
    parser decoded (pyjwt's, which takes all three) to the same rules as :func:`loads`."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not allow_surrogates:
                _check_text(item)
        elif type(item) is int:
            if not -_LARGEST <= item <= _LARGEST:
                raise WireJSONError(_INFINITE)
        elif type(item) is float:
            if not math.isfinite(item):
                raise WireJSONError(_INFINITE)
        elif isinstance(item, dict):
            if depth >= max_depth:
                raise WireJSONError(f"JSON nested deeper than {max_depth} levels")
            for key, child in item.items():
                if not allow_surrogates:
                    _check_text(key)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            if depth >= max_depth:
                raise WireJSONError(f"JSON nested deeper than {max_depth} levels")
            stack.extend((child, depth + 1) for child in item)


def _check_text(text: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise WireJSONError("strings must not contain lone surrogates") from None


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
"""Built once: ``json.dumps`` with options builds an encoder for every call."""


def dumps(value: Any) -> str:
    """Compact, ASCII-only JSON; raises ``ValueError`` for NaN or infinity instead of emitting
    them, and writes a lone surrogate as U+FFFD (:func:`without_lone_surrogates`): what it
    writes, :func:`loads` reads."""
    return without_lone_surrogates(_ENCODER.encode(value))


_ESCAPES = re.compile(r"\\\\|\\ud[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2}|\\ud[89a-f][0-9a-f]{2}")
"""In the standard encoder's ASCII output: an escaped backslash (so the ``u`` after it is text),
a surrogate pair (a character beyond the BMP), or a lone surrogate's escape, leftmost first."""


def _lone_to_replacement(match: re.Match[str]) -> str:
    escape = match.group()
    return "\\ufffd" if len(escape) == 6 else escape


def without_lone_surrogates(text: str) -> str:
    """The standard encoder's ASCII JSON with each lone surrogate's escape (``\\udcff``)
    replaced by U+FFFD's. A Python string holds one where a server read bytes that were not
    UTF-8 (aiohttp reads a header's that way, ``surrogateescape``) and a caller copied them on:
    the standard encoder escapes it, and no strict reader, :func:`loads` included, takes the
    result (RFC 8259 section 8.2). Fixed here, where the text is written, for every caller."""
    if "\\" not in text or "\\ud" not in text:  # one character is found at memchr's speed
        return text
    return _ESCAPES.sub(_lone_to_replacement, text)
