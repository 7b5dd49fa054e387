"""``python -m services``: the whole stack in one process on embedded defaults (what `make run` runs).

Every service shares one in-process event bus (with REDIS_URL, each opens its own Redis bus), so a
logout on auth_service reaches the sockets.
Each service reads its own variables from the environment (docs/configuration.md); AUTH_DEV
defaults to 1 here. Its output is JSON lines on stderr, and one banner on stdout once both
services are ready.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time

from auth_service.domain.errors import AuthError
from services.embedded import Stack, build_stack
from shared.config.env import ConfigError
from shared.http.serve import CannotListen, run
from shared.redis.bus import BusRefused
from shared.startup import start_logging

log = logging.getLogger("services")

READY_WAIT = 10.0
"""How long the banner waits for both services before it says which one is not ready."""


async def announce(stack: Stack) -> None:
    """Print the banner once both services are ready, or after READY_WAIT saying what is not
    (then one more line when they become ready)."""
    deadline = time.monotonic() + READY_WAIT
    while True:
        states = await stack.readiness()
        ready = all(state.ready for state in states.values())
        if ready or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.1)
    print(stack.banner(states), flush=True)
    while not ready:
        await asyncio.sleep(1.0)
        ready = all(state.ready for state in (await stack.readiness()).values())
    if time.monotonic() >= deadline:
        log.info("realtime gateway is up now: both services are ready")


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m services",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args(argv)
    environ = {**os.environ}
    environ.setdefault("AUTH_DEV", "1")
    try:
        start_logging(environ, "LOG_LEVEL")
        stack = build_stack(environ)
    except ConfigError as exc:
        log.error(f"configuration error: {exc}")
        return 2
    try:
        run(stack.sites, on_started=lambda: announce(stack))
    except AuthError as exc:
        log.error(f"auth_service: {exc.description}")
        return 1
    except BusRefused as exc:
        log.error(f"configuration error: {exc}")
        return 2
    except CannotListen as exc:
        hint = " (is another `make run` running?)" if exc.in_use else ""
        log.error(
            f"cannot start: {exc}{hint}; stop it, or pick other ports with "
            "AUTH_PORT=... WS_PORT=... make run"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
