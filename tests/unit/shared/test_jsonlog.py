"""The one logging setup redacts every JWT (access token or ticket) from every logger's lines: the
message, its arguments, extras and tracebacks, a library's records included."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections.abc import Iterator

import pytest

from shared.jsonlog import REDACTED, JsonFormatter, Throttled, configure_logging

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


def test_ordinary_text_is_left_alone() -> None:
    record = logging.makeLogRecord({"msg": "heyJude eyJ short.ok", "name": "x"})
    assert json.loads(JsonFormatter().format(record))["msg"] == "heyJude eyJ short.ok"


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
