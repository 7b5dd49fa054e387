"""A tiny terminal chat on the gateway, to see the system work in two terminals:

    python -m realtime_gateway_client.chat --user alice      # terminal 1
    python -m realtime_gateway_client.chat --user bob        # terminal 2

Lines typed are published to the channel (default ``chat:lobby``: the room the demo page opens,
so the two meet); messages on it and on your own ``user:<id>`` channel are printed, and so is every
change of the connection (lost, reconnecting, reconnected, session ended) as it happens. Ctrl-D or Ctrl-C quits, in every state. A wrong URL
is one line and exit status 1 at once: nothing is retried before the first connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import io
import json
import os
import re
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

from realtime_gateway_client.client import (
    AuthenticationFailed,
    ClientError,
    GatewayClient,
    Unreachable,
)

__all__ = ["StatePrinter", "chat", "format_message", "main", "parse_args", "run_chat"]


def parse_args(argv: Sequence[str], environ: Mapping[str, str]) -> argparse.Namespace:
    auth = f"http://{environ.get('AUTH_HOST', '127.0.0.1')}:{environ.get('AUTH_PORT', '8081')}"
    ws = f"ws://{environ.get('WS_HOST', '127.0.0.1')}:{environ.get('WS_PORT', '8082')}/ws"
    parser = argparse.ArgumentParser(
        prog="python -m realtime_gateway_client.chat",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--user", required=True, help="username to log in as")
    parser.add_argument(
        "--password", default=environ.get("CHAT_PASSWORD"), help="or CHAT_PASSWORD; else prompted"
    )
    parser.add_argument("--channel", default="chat:lobby")
    parser.add_argument("--auth-url", default=auth, help=f"auth_service base URL ({auth})")
    parser.add_argument("--ws-url", default=ws, help=f"ws_service WebSocket URL ({ws})")
    return parser.parse_args(argv)


_UNPRINTED = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028-\u202e\u2066-\u2069]")
"""What another user's text must not put on the terminal: C0 and C1 controls and DEL (a newline
forges a line from anyone, escapes retitle the terminal or write its clipboard, OSC 52), line
and paragraph separators, and the bidirectional embeddings, overrides and isolates that reorder
what is shown. A tab, and the marks Hebrew and Arabic text carries (LRM, RLM, ALM), stay."""


def _printable(text: str) -> str:
    return _UNPRINTED.sub(lambda match: match[0].encode("unicode_escape").decode(), text)


def format_message(message: Mapping[str, Any]) -> str:
    data = message.get("data")
    text = data.get("text") if isinstance(data, dict) else None
    body = text if isinstance(text, str) else json.dumps(data)
    sender = message.get("from_username") or message.get("from") or "server"
    return _printable(f"[{message.get('channel')}] {sender}: {body}")


async def chat(
    client: GatewayClient, channel: str, lines: AsyncIterator[str], out: Callable[[str], None]
) -> None:
    """Print what arrives while publishing what is typed. Returns when ``lines`` ends; raises
    the client's reason (``AuthenticationFailed`` on revocation) as soon as it stops."""
    await client.subscribe(channel)
    if client.user is not None:
        await client.subscribe(f"user:{client.user['id']}")

    async def printer() -> None:
        async for message in client.messages():
            out(format_message(message))

    async def typing() -> None:
        async for line in lines:
            if not line.strip():
                continue
            try:
                await client.publish(channel, {"text": line.rstrip("\n")})
            except ValueError as exc:  # a line the gateway refuses: "not sent: why"
                out(f"* {exc}")
            except ClientError as exc:
                out(f"* not sent ({exc})")

    loop = asyncio.get_running_loop()
    tasks = {loop.create_task(printer()), loop.create_task(typing())}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()


class StatePrinter:
    """One line per connection change as it happens, so a drop is seen at once, not on the next
    typed line. A close the client stops on is left to the exit message."""

    def __init__(self, channel: str, out: Callable[[str], None]) -> None:
        self._channel = channel
        self._out = out
        self._lost = ""
        self._dropped = False

    def __call__(self, state: str, detail: str) -> None:
        if state == "disconnected":
            self._lost = detail or "network error"
        elif state == "reconnecting":
            self._out(f"* connection lost ({self._lost}); reconnecting {detail}")
            self._dropped = True
        elif state == "connected" and self._dropped:
            self._out(f"* reconnected as {detail} on {self._channel}")


def _say_removed(event: Mapping[str, Any], out: Callable[[str], None]) -> None:
    """The gateway took a channel away (the app's backend, or a renewed token that may not read
    it): said, or the terminal went quiet without a word."""
    if event.get("type") == "unsubscribed":
        out(_printable(f"* removed from {event.get('channel')} ({event.get('reason')})"))


async def stdin_lines() -> AsyncIterator[str]:
    """Lines from stdin, read on a daemon thread: a blocked read never holds up the exit. A byte
    that is not in stdin's encoding reads as U+FFFD: under a UTF-8 locale stdin decodes strictly,
    and a pasted Latin-1 line killed the reader, after which nothing typed was read, Ctrl-D
    included. The end is said however the reading ends."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str] = asyncio.Queue()
    stdin = sys.stdin
    if isinstance(stdin, io.TextIOWrapper):
        stdin.reconfigure(errors="replace")

    def read() -> None:
        try:
            for line in stdin:
                loop.call_soon_threadsafe(queue.put_nowait, line)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, "")

    threading.Thread(target=read, name="stdin", daemon=True).start()
    while line := await queue.get():
        yield line


async def run_chat(args: argparse.Namespace, password: str, out: Callable[[str], None]) -> None:
    """Returns on Ctrl-D, and on Ctrl-C in every state (logging in, connected, reconnecting)."""
    task = asyncio.current_task()
    assert task is not None
    try:
        with _ctrl_c_cancels(task):
            async with GatewayClient(
                args.auth_url,
                args.ws_url,
                args.user,
                password,
                on_state=StatePrinter(args.channel, out),
                on_event=lambda event: _say_removed(event, out),
            ) as client:
                out(f"* connected as {args.user} on {args.channel}; type to chat, Ctrl-D to quit")
                await chat(client, args.channel, stdin_lines(), out)
    except asyncio.CancelledError:
        if task.uncancel() > 0:
            raise
        out("")


@contextlib.contextmanager
def _ctrl_c_cancels(task: asyncio.Task[None]) -> Iterator[None]:
    """The loop's own SIGINT handling wakes it at once, whichever thread the signal lands on (the
    stdin reader's included), and cancels ``task``, so the client closes cleanly. Windows' loop
    has none: there asyncio.run's own Ctrl-C handling cancels the task."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, task.cancel)
    except NotImplementedError:
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv, os.environ)
    try:
        password = args.password or getpass.getpass(f"password for {args.user}: ")
        asyncio.run(run_chat(args, password, lambda line: print(line, flush=True)))
    except KeyboardInterrupt:
        print()
    except EOFError:
        sys.exit("chat: no password given")
    except AuthenticationFailed as exc:
        if exc.close_code is None:
            sys.exit(f"chat: login refused ({exc})")
        sys.exit(f"chat: the session ended ({exc.code}): log in again")
    except Unreachable as exc:
        sys.exit(f"chat: {exc}; is `make run` up, and are --auth-url and --ws-url right?")
    except ClientError as exc:
        sys.exit(f"chat: {exc}")


if __name__ == "__main__":
    main()
