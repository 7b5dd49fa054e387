"""The chat CLI's argument defaults and message formatting."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

import pytest

from realtime_gateway_client.chat import _say_removed, format_message, parse_args, stdin_lines

DEMO_PAGE = Path(__file__).parents[3] / "services" / "web" / "index.html"


def test_defaults_point_at_the_local_services() -> None:
    args = parse_args(["--user", "alice"], {})
    assert (args.auth_url, args.ws_url, args.channel) == (
        "http://127.0.0.1:8081",
        "ws://127.0.0.1:8082/ws",
        "chat:lobby",
    )
    args = parse_args(
        ["--user", "a"], {"AUTH_PORT": "9001", "WS_PORT": "9002", "CHAT_PASSWORD": "p"}
    )
    assert (args.auth_url, args.ws_url, args.password) == (
        "http://127.0.0.1:9001",
        "ws://127.0.0.1:9002/ws",
        "p",
    )


def test_format_message_names_the_sender_by_username() -> None:
    message = {
        "channel": "chat:a",
        "from": "6f1c-uuid",
        "from_username": "bob",
        "data": {"text": "hi"},
    }
    assert format_message(message) == "[chat:a] bob: hi"
    assert format_message({**message, "from_username": None}) == "[chat:a] 6f1c-uuid: hi"
    assert format_message({"channel": "user:1", "from": None, "data": [1, 2]}) == (
        "[user:1] server: [1, 2]"
    )


def test_the_chat_and_the_demo_page_meet_in_one_room() -> None:
    """Following the README, a terminal and a browser see each other without choosing a room."""
    page_room = re.search(r'<input id="room"[^>]* value="([^"]+)"', DEMO_PAGE.read_text())
    assert page_room is not None, "the page's room field went missing"
    assert parse_args(["--user", "alice"], {}).channel == f"chat:{page_room[1]}"


def test_format_message_prints_no_control_character_another_user_sent() -> None:
    """Another user's text went to the terminal raw: a newline and a prefix forged a line from
    anyone, and escapes retitled the terminal or wrote the reader's clipboard (OSC 52)."""
    text = "ok\n[chat:a] alice: hi\r\x1b]52;c;Y3VybA==\x07\x1b[2J\u202etxt.exe\x9b31m"
    line = format_message({"channel": "chat:a", "from_username": "bob", "data": {"text": text}})
    assert line == (
        "[chat:a] bob: ok\\n[chat:a] alice: hi\\r\\x1b]52;c;Y3VybA==\\x07\\x1b[2J\\u202etxt.exe"
        "\\x9b31m"
    )
    assert format_message({"channel": "chat:a", "from": "x\x1b[1m", "data": {"text": "é 😀"}}) == (
        "[chat:a] x\\x1b[1m: é 😀"
    )
    hebrew = "\u05e9\u05dc\u05d5\u05dd\u200f!\tok \u0645\u0631\u062d\u0628\u0627\u061c"
    line = format_message({"channel": "chat:a", "from": "y", "data": {"text": hebrew}})
    assert line == f"[chat:a] y: {hebrew}", "a tab and the marks RTL text carries stay (probe)"


def test_the_chat_says_when_the_gateway_removes_it_from_a_channel() -> None:
    """The gateway's own unsubscribe (the app's backend, a renewed token): the terminal went
    quiet without a word (an outside probe)."""
    lines: list[str] = []
    _say_removed({"type": "unsubscribed", "channel": "chat:a", "reason": "server"}, lines.append)
    _say_removed({"type": "join", "channel": "chat:a"}, lines.append)
    assert lines == ["* removed from chat:a (server)"]


async def test_a_line_that_is_not_utf_8_is_typed_with_replacement_characters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under a UTF-8 locale stdin decodes strictly: a pasted Latin-1 line (or any byte that is
    not UTF-8) raised UnicodeDecodeError on the reader thread, which died without saying the
    input ended, so the chat read nothing more and Ctrl-D no longer quit it."""
    typed = io.TextIOWrapper(io.BytesIO(b"ok\n\xff caf\xe9\nafter\n"), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", typed)
    async with asyncio.timeout(5):
        lines = [line async for line in stdin_lines()]
    assert lines == ["ok\n", "\ufffd caf\ufffd\n", "after\n"]
