"""The close-code table: the server's only way to close, the client's only guide, and the table
docs/protocol.md shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from realtime_gateway_protocol.close_codes import Action, CloseCode, Disconnect, action_for

ROOT = Path(__file__).parents[3]
PROTOCOL_DOC = ROOT / "docs" / "protocol.md"


def documented_rows() -> set[tuple[int, str, str]]:
    """(code, reason, action) of every row of the doc's close-code table."""
    section = PROTOCOL_DOC.read_text().split("## Close codes", 1)[1].split("\n## ", 1)[0]
    rows = set()
    for line in section.splitlines():
        match = re.match(r"\|\s*(\d{4})\s*\|\s*(`(\w+)`|\(none\))\s*\|\s*(\w+)\s*\|", line)
        if match:
            rows.add((int(match[1]), match[3] or "", match[4]))
    return rows


def test_the_protocol_doc_lists_exactly_the_table() -> None:
    table = {(row.code.value, row.reason, row.action.value) for row in Disconnect}
    assert documented_rows() == table


def test_every_reason_names_one_row_and_every_code_is_used() -> None:
    assert len({row.reason for row in Disconnect}) == len(Disconnect)
    assert {row.code for row in Disconnect} == set(CloseCode)


@pytest.mark.parametrize("row", list(Disconnect))
def test_a_listed_close_takes_its_rows_action(row: Disconnect) -> None:
    assert action_for(row.code, row.reason) is row.action


@pytest.mark.parametrize(
    ("code", "reason", "action"),
    [
        (None, "", Action.RECONNECT),  # the connection dropped
        (1000, "", Action.RECONNECT),
        (1006, "", Action.RECONNECT),
        (4401, "something_new", Action.STOP),
        (4403, "", Action.STOP),
        (4429, "something_new", Action.RECONNECT),
        (4403, "token_expired", Action.STOP),  # a reason under another code is not that row
    ],
)
def test_an_unlisted_close(code: int | None, reason: str, action: Action) -> None:
    assert action_for(code, reason) is action


def js_rows() -> set[tuple[int, str, str]]:
    """The ``DISCONNECTS`` rows of the JavaScript client, read from its source."""
    source = (ROOT / "clients" / "js" / "gateway-client.js").read_text()
    table = source.split("export const DISCONNECTS = Object.freeze([", 1)[1].split("]);", 1)[0]
    rows = re.findall(r'\[(\d+), "([a-z_]*)", "([a-z_]+)"\]', table)
    return {(int(code), reason, action) for code, reason, action in rows}


def test_the_javascript_client_acts_on_the_same_table() -> None:
    assert js_rows() == {(row.code.value, row.reason, row.action.value) for row in Disconnect}
