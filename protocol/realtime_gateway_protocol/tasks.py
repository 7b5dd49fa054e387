"""Stopping background tasks without eating a cancellation meant for the caller.

``task.cancel(); with suppress(CancelledError): await task`` also swallows the ``CancelledError``
raised when the *caller* is cancelled while it waits, so a shutdown that should stop there runs
on. Standard library only: the Python client uses it too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_and_wait", "raise_if_cancelled"]

log = logging.getLogger(__name__)


RECANCEL_AFTER = 5.0
"""Seconds a cancelled task may take to end before it is cancelled again."""


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel ``tasks`` (``None`` entries are skipped) and wait until each has ended.

    A ``CancelledError`` from a task is its normal end and is absorbed; one aimed at the caller
    propagates. A task that failed with another exception has its error logged: shutdown goes
    on. A task still running 5 s after its cancel is cancelled again, until it ends: on
    Python 3.11 a cancel that lands as an ``asyncio.timeout`` (or redis-py's read timeout)
    expires comes out as a ``TimeoutError``, which a loop that logs its failures and goes on
    takes for one, and the shutdown waited for ever (auth_service's outbox loop, stopping on a
    Redis user refused its channels; a webhook test's teardown once in CI)."""
    pending = [task for task in tasks if task is not None]
    for task in pending:
        task.cancel()
    await _wait_all(pending)


def raise_if_cancelled() -> None:
    """In a loop that logs its failures and goes on: end it when its cancel was taken for a
    failure (Python 3.11: a cancel landing as an ``asyncio.timeout`` expires comes out as a
    ``TimeoutError``). The cancel stays requested (``cancelling()``) until ``uncancel()``."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _wait_all(tasks: Iterable[asyncio.Future[Any]]) -> None:
    for task in tasks:
        while not task.done():
            # asyncio.wait raises only a cancel aimed at the caller, and never cancels the task.
            await asyncio.wait({task}, timeout=RECANCEL_AFTER)
            if not task.done():
                log.warning(
                    "a cancelled task went on; cancelled again", extra={"task": _name(task)}
                )
                task.cancel()
        if task.cancelled():
            continue
        exc = task.exception()
        if exc is not None:
            log.error(
                "a background task had failed",
                exc_info=(type(exc), exc, exc.__traceback__),
                extra={"task": _name(task)},
            )


def _name(task: asyncio.Future[Any]) -> str:
    return task.get_name() if isinstance(task, asyncio.Task) else repr(task)
