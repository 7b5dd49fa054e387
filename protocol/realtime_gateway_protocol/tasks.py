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

__all__ = ["cancel_and_wait"]

log = logging.getLogger(__name__)


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel ``tasks`` (``None`` entries are skipped) and wait until each has ended.

    A ``CancelledError`` from a task is its normal end and is absorbed; one aimed at the caller
    (``current_task().cancelling()``) propagates. A task that failed with another exception has
    its error logged: shutdown goes on."""
    pending = [task for task in tasks if task is not None]
    for task in pending:
        task.cancel()
    await _wait_all(pending)


async def _wait_all(tasks: Iterable[asyncio.Future[Any]]) -> None:
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        except Exception:
            log.exception("a background task had failed", extra={"task": _name(task)})


def _name(task: asyncio.Future[Any]) -> str:
    return task.get_name() if isinstance(task, asyncio.Task) else repr(task)
