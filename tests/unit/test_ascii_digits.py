"""Numbers read from text that others write: ``str.isdigit`` is true for superscripts and every
script's digits, which ``int`` either refuses (a ValueError past the check: a 500 and a traceback)
or reads (``"\u0661"`` is 1, so two spellings name one number). Each check asks for ASCII too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from examples.app_backend.gateway import document_of

ROOT = Path(__file__).resolve().parents[2]
CODE = (
    "auth_service",
    "ws_service",
    "shared",
    "protocol",
    "clients/python",
    "services",
    "examples",
)


def test_every_digit_check_in_the_code_also_asks_for_ascii() -> None:
    unchecked = [
        f"{path.relative_to(ROOT)}:{number}"
        for top in CODE
        for path in sorted((ROOT / top).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\.is(digit|decimal|numeric)\(\)", line) and ".isascii()" not in line
    ]
    assert unchecked == []


@pytest.mark.parametrize("name", ["doc:\u00b2", "doc:\u0661", "doc:1\u0662"])
def test_the_example_reads_only_ascii_document_numbers(name: str) -> None:
    assert document_of(name) is None
    assert document_of("doc:12") == 12
