"""The one logging setup redacts every JWT (access token or ticket) from every logger's lines: the
message, its arguments, extras and tracebacks, a library's records included."""

from __future__ import annotations

import contextvars
import dataclasses
import datetime
import enum
import json
import logging
import math
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime_gateway_protocol.wire_json import loads, without_lone_surrogates
from shared.jsonlog import (
    REDACTED,
    REQUEST_ID,
    JsonFormatter,
    Throttled,
    _encode,
    audit,
    configure_logging,
    info,
)

TOKEN = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiYXQrand0In0"
    ".eyJzdWIiOiJhbGljZSIsInNpZCI6InMxIn0"
    ".c2lnbmF0dXJlLWJ5dGVzLW9mLXRoZS1rZXk"
)


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, excepthook = root.handlers[:], root.level, sys.excepthook
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    sys.excepthook = excepthook
    logging.captureWarnings(False)


def test_a_library_logger_cannot_print_a_token(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO")
    logging.getLogger("aiohttp.websocket").warning(
        "%s: Client protocols %r don't overlap server-known ones %r",
        "127.0.0.1",
        [f"realtime.bearer.{TOKEN}", f"x{TOKEN[:40]}"],
        ("realtime.v1",),
    )
    line = capsys.readouterr().err
    assert TOKEN[:20] not in line
    assert json.loads(line)["msg"] == (
        f"127.0.0.1: Client protocols ['realtime.bearer.{REDACTED}', 'x{REDACTED}'] "
        "don't overlap server-known ones ('realtime.v1',)"
    )


def test_extras_and_tracebacks_are_redacted_too() -> None:
    try:
        raise ValueError(f"bad ticket {TOKEN}")
    except ValueError:
        record = logging.getLogger("anything").makeRecord(
            "anything",
            logging.ERROR,
            __file__,
            1,
            "failed",
            (),
            sys.exc_info(),
            extra={"query": {"ticket": TOKEN}},
        )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["query"] == {"ticket": REDACTED}
    assert f"bad ticket {REDACTED}" in entry["exc"]
    assert TOKEN[-20:] not in json.dumps(entry)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://gw:Pr0xy@app:8000/allow", "http://***@app:8000/allow"),
        ("postgresql://u:p@w@db/x", "postgresql://***@db/x"),
        ("redis://:secret@h:6379/0", "redis://***@h:6379/0"),
    ],
)
def test_a_urls_password_never_reaches_a_line(
    root_logging: None, capsys: pytest.CaptureFixture[str], url: str, shown: str
) -> None:
    """Wherever a caller or a library put the URL: the message, an extra, an exception's text,
    a line written straight to the stream."""
    configure_logging("INFO")
    logger = logging.getLogger("anything")
    logger.warning(f"cannot reach {url}", extra={"url": url})
    try:
        raise OSError(f"refused: {url}")
    except OSError:
        logger.exception("failed")
    info(logging.getLogger("access"), "request", {"target": url})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["msg"] == f"cannot reach {shown}" and lines[0]["url"] == shown
    assert f"refused: {shown}" in lines[1]["exc"]
    assert lines[2]["target"] == shown
    assert not any(secret in json.dumps(lines) for secret in ("Pr0xy", ":p@", "secret"))


def test_ordinary_text_is_left_alone() -> None:
    for text in ("heyJude eyJ short.ok", "mail a@b.c from http://h/x", "http://user@h/ at 1:2"):
        record = logging.makeLogRecord({"msg": text, "name": "x"})
        assert json.loads(JsonFormatter().format(record))["msg"] == text


def test_warnings_and_a_crash_are_json_lines_too(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO")
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # not an error, as the test run has it
        warnings.warn_explicit("a library is unhappy", UserWarning, "lib.py", 7)
    try:
        raise RuntimeError("start-up failed")
    except RuntimeError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    warned, crashed = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert warned["logger"] == "py.warnings" and "a library is unhappy" in warned["msg"]
    assert crashed["level"] == "critical" and "RuntimeError: start-up failed" in crashed["exc"]


def test_a_throttled_warning_is_one_line_per_interval_saying_how_many_it_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    warn = Throttled(logging.getLogger("t"), "redis unreachable", interval=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t"):
        for _ in range(1000):
            warn.warning(error="connection refused")
        now[0] += 9.9
        warn.warning(error="connection refused")
        assert len(caplog.records) == 1
        now[0] += 0.1
        warn.warning(error="timeout")
        now[0] += 10
        warn.warning(error="timeout")
    first, second, third = caplog.records
    assert not hasattr(first, "suppressed") and first.error == "connection refused"  # type: ignore[attr-defined]
    assert (second.suppressed, second.error) == (1000, "timeout")  # type: ignore[attr-defined]
    assert not hasattr(third, "suppressed")
    assert {r.getMessage() for r in caplog.records} == {"redis unreachable"}


def _through_logging(logger: logging.Logger, message: str, fields: dict[str, object]) -> str:
    record = logger.makeRecord(
        logger.name, logging.INFO, __file__, 1, message, (), None, extra=fields
    )
    return JsonFormatter().format(record)


def test_a_request_line_written_directly_is_the_line_logging_would_write(
    root_logging: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_logging("INFO")
    access = logging.getLogger("access")
    fields: dict[str, object] = {"method": "POST", "path": "/t", "status": 200, "note": TOKEN}
    context = contextvars.copy_context()
    context.run(REQUEST_ID.set, "req-1")
    expected = json.loads(context.run(_through_logging, access, "request", fields))

    def no_record(*args: object, **kwargs: object) -> logging.LogRecord:
        raise AssertionError("the line went through a LogRecord")

    monkeypatch.setattr(logging.Logger, "makeRecord", no_record)
    context.run(info, access, "request", fields)
    context.run(audit, "refresh_ok", user="u1")
    line, audited = (json.loads(text) for text in capsys.readouterr().err.splitlines())
    assert abs(line.pop("ts") - expected.pop("ts")) < 5
    assert line == expected and line["note"] == REDACTED and line["request_id"] == "req-1"
    assert list(line) == list(expected)  # the same fields in the same order
    assert audited["logger"] == "audit" and audited["msg"] == audited["event"] == "refresh_ok"
    assert (audited["user"], audited["request_id"]) == ("u1", "req-1")


def test_a_handler_added_later_gets_the_records_of_the_direct_lines(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A capture (a test's, an operator's) added after configure_logging sees every record."""
    configure_logging("INFO")
    seen: list[logging.LogRecord] = []
    extra = logging.Handler()
    extra.emit = seen.append  # type: ignore[method-assign]
    for attach, detach in (
        (logging.getLogger().addHandler, logging.getLogger().removeHandler),
        (logging.getLogger("access").addHandler, logging.getLogger("access").removeHandler),
    ):
        attach(extra)
        try:
            info(logging.getLogger("access"), "request", {"status": 204})
        finally:
            detach(extra)
    assert [record.status for record in seen] == [204, 204]  # type: ignore[attr-defined]
    assert [json.loads(text)["status"] for text in capsys.readouterr().err.splitlines()] == [
        204,
        204,
    ]


def test_the_level_switch_turns_the_direct_lines_off(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("WARNING")
    info(logging.getLogger("access"), "request", {"status": 200})
    audit("refresh_ok", user="u1")
    assert capsys.readouterr().err == ""


_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(codec=None, exclude_categories=()), max_size=20)
)
_values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _finite(value: object) -> object:
    """What a line says once read back, with NaN and infinity as ``null`` (orjson's spelling)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_finite(item) for item in value]
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    return value


@given(st.dictionaries(st.text(max_size=8) | st.integers(), _values, max_size=6))
def test_a_line_says_what_the_standard_encoder_says_in_ascii(entry: dict[Any, Any]) -> None:
    """orjson writes the lines when it says the same thing; anything it cannot say alike
    (non-ASCII, lone surrogates, big integers, non-string keys) goes to the standard encoder."""
    line = _encode(entry)
    assert line.isascii()
    assert "\n" not in line
    standard = json.JSONEncoder(default=str, separators=(",", ":")).encode(entry)
    read = json.loads(line, parse_constant=lambda name: None)
    assert _finite(read) == _finite(json.loads(without_lone_surrogates(standard)))


def test_a_line_never_holds_a_lone_surrogate() -> None:
    """aiohttp reads a header's bytes that are not UTF-8 as lone surrogates; an audit line that
    copies one (a refused Origin) is still a line a strict reader takes, U+FFFD in its place."""
    line = _encode({"origin": "http://\udcff", "error": "a \udcff\udcfe-encoded answer",
                    "\udcff": ["\ud83d\ude00", "\U0001f600"]})  # fmt: skip
    assert loads(line) == {
        "origin": "http://\ufffd",
        "error": "a \ufffd\ufffd-encoded answer",
        "\ufffd": ["\U0001f600", "\U0001f600"],
    }


def test_a_line_of_odd_values_reads_as_the_standard_one() -> None:
    class Shade(enum.Enum):
        RED = "red"

    @dataclasses.dataclass
    class Point:
        x: int

    entry = {
        "when": datetime.datetime(2026, 12, 6, 12, 0),
        "point": Point(1),
        "raw": b"\x00",
        "set": {1},
        "shade": Shade.RED,
        "nan": float("nan"),
        "tiny": 1e-05,
        "del": "\x7f",
    }
    assert json.loads(_encode(entry)) == {
        "when": "2026-12-06 12:00:00",
        "point": "test_a_line_of_odd_values_reads_as_the_standard_one.<locals>.Point(x=1)",
        "raw": "b'\\x00'",
        "set": "{1}",
        "shade": "red",
        "nan": None,
        "tiny": 1e-05,
        "del": "\x7f",
    }
