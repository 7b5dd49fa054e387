"""Waiting on a condition another process owns (a key Redis expires, a key set a server refetches):
there is no event to await, so poll it, with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["poll"]


async def poll(
    check: Callable[[], Awaitable[bool]], *, within: float = 5.0, interval: float = 0.02
) -> None:
    """Return once ``check()`` is true; ``TimeoutError`` after ``within`` seconds."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 (nothing to await but the other side)
            await asyncio.sleep(interval)
