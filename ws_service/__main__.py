"""``python -m ws_service``: read the environment, log JSON, serve."""

from __future__ import annotations

import asyncio
import os
import sys

from aiohttp import web

from shared.envparse import ConfigError
from shared.jsonlog import configure_logging
from ws_service.app import create_app
from ws_service.settings import Settings


def _event_loop() -> asyncio.AbstractEventLoop | None:
    """uvloop when installed: cheaper sockets and timers for many idle connections."""
    try:
        import uvloop
    except ImportError:
        return None
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def main() -> None:
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        sys.exit(f"ws_service: {exc}")
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        backlog=1024,
        shutdown_timeout=settings.shutdown_timeout,
        loop=_event_loop(),
        print=None,
    )


if __name__ == "__main__":
    main()
