"""The one JSON codec for everything that crosses the wire (HTTP bodies, WebSocket frames).

Python's ``json`` accepts what no browser does: ``NaN``/``Infinity``, ``1e400`` (parsed as
``inf``), lone UTF-16 surrogates (``"\\ud800"``), and nesting hundreds deep that later fails to
re-encode. One user's frame must never break a channel for everyone, so every decoder here is
strict and every encoder refuses non-finite numbers. Standard library only: the client uses it too.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["MAX_DEPTH", "WireJSONError", "check", "dumps", "loads"]

MAX_DEPTH = 32
"""Nesting allowed in a document: deep enough for any real payload, far below the recursion limit."""


class WireJSONError(ValueError):
    """The input is not JSON this system accepts; ``str(error)`` says why, for the client."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise WireJSONError("numbers must be finite")
    return value


def _constant(name: str) -> Any:
    raise WireJSONError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_float=_finite, parse_constant=_constant)


def loads(data: str | bytes, *, max_depth: int = MAX_DEPTH, allow_surrogates: bool = False) -> Any:
    """Parse strict JSON (RFC 8259, UTF-8, finite numbers, bounded depth).

    ``allow_surrogates`` keeps lone surrogates in strings for callers that validate every field
    they use and only ever re-encode with :func:`dumps` (which escapes them): a WebSocket frame
    whose token holds one is then an invalid token, not a malformed frame.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise WireJSONError("the body is not valid UTF-8") from None
    try:
        value = _DECODER.decode(data)
    except WireJSONError:
        raise
    except RecursionError:
        raise WireJSONError("JSON nested too deeply") from None
    except ValueError:
        raise WireJSONError("not valid JSON") from None
    check(value, max_depth=max_depth, allow_surrogates=allow_surrogates)
    return value


def check(value: Any, *, max_depth: int = MAX_DEPTH, allow_surrogates: bool = False) -> None:
    """Raise :class:`WireJSONError` unless ``value`` (already decoded) is within ``max_depth``
    and, unless allowed, free of lone surrogates. One iterative walk: no recursion for an
    attacker to exhaust."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not allow_surrogates:
                _check_text(item)
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


def dumps(value: Any) -> str:
    """Compact, ASCII-only JSON; raises ``ValueError`` for NaN or infinity instead of emitting them."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)
