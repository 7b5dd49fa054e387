"""The chat CLI's argument defaults and message formatting."""

from __future__ import annotations

from ws_service.chat import format_message, parse_args


def test_defaults_point_at_the_local_services() -> None:
    args = parse_args(["--user", "alice"], {})
    assert (args.auth_url, args.ws_url, args.channel) == (
        "http://127.0.0.1:8081",
        "ws://127.0.0.1:8082/ws",
        "chat:general",
    )
    args = parse_args(
        ["--user", "a"], {"AUTH_PORT": "9001", "WS_PORT": "9002", "CHAT_PASSWORD": "p"}
    )
    assert (args.auth_url, args.ws_url, args.password) == (
        "http://127.0.0.1:9001",
        "ws://127.0.0.1:9002/ws",
        "p",
    )


def test_format_message() -> None:
    assert format_message({"channel": "chat:a", "from": "bob", "data": {"text": "hi"}}) == (
        "[chat:a] bob: hi"
    )
    assert format_message({"channel": "user:1", "from": None, "data": [1, 2]}) == (
        "[user:1] server: [1, 2]"
    )
