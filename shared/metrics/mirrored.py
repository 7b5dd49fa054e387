"""Gauges that copy state other code owns (whether the bus reaches Redis, whether events wait in
the outbox), for ``/metrics`` and the alert rules in deploy/observability/.

Copied every second rather than read at scrape time (``Gauge.set_function``): with several
workers, prometheus_client's multiprocess mode answers a scrape from the values each worker wrote
to its files, and a callback writes none.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

from prometheus_client import Gauge

from realtime_gateway_protocol.tasks import cancel_and_wait

__all__ = ["MIRROR_INTERVAL", "Mirror", "mirrored"]

MIRROR_INTERVAL = 1.0

Mirror = tuple[Gauge, Callable[[], float]]
"""A gauge and what it shows."""


@contextlib.asynccontextmanager
async def mirrored(
    mirrors: Sequence[Mirror], interval: float = MIRROR_INTERVAL
) -> AsyncIterator[None]:
    """Copy each value into its gauge now, then every ``interval`` seconds until the block ends."""

    def copy() -> None:
        for gauge, read in mirrors:
            gauge.set(read())

    async def copy_forever() -> None:
        while True:
            await asyncio.sleep(interval)
            copy()

    copy()
    task = asyncio.get_running_loop().create_task(copy_forever(), name="mirrored-gauges")
    try:
        yield
    finally:
        await cancel_and_wait(task)
