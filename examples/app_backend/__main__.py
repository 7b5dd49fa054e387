"""``python -m examples.app_backend [serve | init | demo | report]`` (README, "Use it from your
app"; this folder's README.md)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from aiohttp import web

from examples.app_backend import commands, demo
from examples.app_backend.app import create_app
from examples.app_backend.settings import ConfigError, Settings, base_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.app_backend", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the example backend (the default)")
    sub.add_parser(
        "init",
        help="make the secrets the gateway signs its calls with, and the file for the client",
    )
    sub.add_parser("demo", help="alice shares a document with bob, they chat, she un-shares it")
    sub.add_parser("report", help="what the example's database holds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="notes: %(message)s")
    try:
        if args.command == "init":
            return commands.init(os.environ)
        if args.command == "demo":
            return asyncio.run(demo.run(base_url(os.environ)))
        settings = Settings.from_env(os.environ)
        if args.command == "report":
            return asyncio.run(commands.report(settings))
    except ConfigError as exc:
        print(f"notes: {exc}", file=sys.stderr)
        return 2
    url = base_url(os.environ)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        print=lambda _: logging.info("the example backend is listening on %s", url),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
