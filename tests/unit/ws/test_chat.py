"""The chat CLI's argument defaults and message formatting."""

from __future__ import annotations

from realtime_gateway_client.chat import format_message, parse_args


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
