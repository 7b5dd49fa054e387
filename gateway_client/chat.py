"""A tiny terminal chat on the gateway, to see the system work in two terminals:

    python -m gateway_client.chat --user alice      # terminal 1
    python -m gateway_client.chat --user bob        # terminal 2

Lines typed are published to the channel (default ``chat:general``); messages on it and on your own
``user:<id>`` channel are printed. Ctrl-D quits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from gateway_client.client import ClientError, GatewayClient

__all__ = ["chat", "format_message", "main", "parse_args"]


def parse_args(argv: Sequence[str], environ: Mapping[str, str]) -> argparse.Namespace:
    auth = f"http://{environ.get('AUTH_HOST', '127.0.0.1')}:{environ.get('AUTH_PORT', '8081')}"
    ws = f"ws://{environ.get('WS_HOST', '127.0.0.1')}:{environ.get('WS_PORT', '8082')}/ws"
    parser = argparse.ArgumentParser(prog="python -m gateway_client.chat", description=__doc__)
    parser.add_argument("--user", required=True, help="username to log in as")
    parser.add_argument(
        "--password", default=environ.get("CHAT_PASSWORD"), help="or CHAT_PASSWORD; else prompted"
    )
    parser.add_argument("--channel", default="chat:general")
    parser.add_argument("--auth-url", default=auth, help=f"auth_service base URL ({auth})")
    parser.add_argument("--ws-url", default=ws, help=f"ws_service WebSocket URL ({ws})")
    return parser.parse_args(argv)


def format_message(message: Mapping[str, Any]) -> str:
    data = message.get("data")
    text = data.get("text") if isinstance(data, dict) else None
    body = text if isinstance(text, str) else json.dumps(data)
    sender = message.get("from_username") or message.get("from") or "server"
    return f"[{message.get('channel')}] {sender}: {body}"


async def chat(
    client: GatewayClient, channel: str, lines: AsyncIterator[str], out: Callable[[str], None]
) -> None:
    """Print what arrives while publishing what is typed; returns when ``lines`` ends."""
    await client.subscribe(channel)
    if client.user is not None:
        await client.subscribe(f"user:{client.user['id']}")

    async def printer() -> None:
        async for message in client.messages():
            out(format_message(message))

    printing = asyncio.get_running_loop().create_task(printer())
    try:
        async for line in lines:
            if line.strip():
                await client.publish(channel, {"text": line.rstrip("\n")})
    finally:
        printing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await printing


async def _stdin_lines() -> AsyncIterator[str]:
    while line := await asyncio.to_thread(sys.stdin.readline):
        yield line


async def _main(args: argparse.Namespace, password: str) -> None:
    async with GatewayClient(args.auth_url, args.ws_url, args.user, password) as client:
        print(f"connected as {args.user} on {args.channel}; type to chat, Ctrl-D to quit")
        await chat(client, args.channel, _stdin_lines(), print)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv, os.environ)
    password = args.password or getpass.getpass(f"password for {args.user}: ")
    try:
        asyncio.run(_main(args, password))
    except ClientError as exc:
        sys.exit(f"chat: {exc}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
