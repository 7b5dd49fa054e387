"""The chat shows each change of the connection as one line when it happens."""

from __future__ import annotations

from realtime_gateway_client.chat import StatePrinter


def test_each_state_change_is_one_line() -> None:
    lines: list[str] = []
    printer = StatePrinter("chat:general", lines.append)
    printer("connected", "bob")
    assert lines == [], "the first connection is announced by the chat itself"
    printer("disconnected", "1006")
    printer("reconnecting", "in 0.4 s")
    printer("connected", "bob")
    printer("disconnected", "4403 session_revoked")
    assert lines == [
        "* connection lost (1006); reconnecting in 0.4 s",
        "* reconnected as bob on chat:general",
    ], "a close the client stops on is left to the exit message"
