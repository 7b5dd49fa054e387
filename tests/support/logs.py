"""Log lines as the services write them: each record formatted by the one JSON formatter at the
moment it is logged, in the logging task's context (where its request id is set)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from shared.jsonlog import JsonFormatter

__all__ = ["JsonLines", "json_lines"]


class JsonLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))

    def logged(self, logger: str, msg: str | None = None) -> list[dict[str, Any]]:
        return [
            line
            for line in self.lines
            if line["logger"] == logger and (msg is None or line["msg"] == msg)
        ]


@contextmanager
def json_lines(level: int = logging.INFO) -> Iterator[JsonLines]:
    """Every line logged at ``level`` or above while the block runs; aiohttp's own access log is
    off, as ``configure_logging`` has it (the test server turns it on)."""
    root, aiohttp_access = logging.getLogger(), logging.getLogger("aiohttp.access")
    handler, before, access_before = JsonLines(), root.level, aiohttp_access.level
    root.addHandler(handler)
    root.setLevel(level)
    aiohttp_access.setLevel(logging.WARNING)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(before)
        aiohttp_access.setLevel(access_before)
