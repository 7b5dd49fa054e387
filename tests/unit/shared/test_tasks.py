"""cancel_and_wait: a task's own cancellation is its normal end; the caller's is not swallowed."""

from __future__ import annotations

import asyncio
import logging

import pytest

from realtime_gateway_protocol.tasks import cancel_and_wait


async def forever() -> None:
    await asyncio.Event().wait()


async def test_the_task_is_cancelled_and_awaited() -> None:
    task = asyncio.create_task(forever())
    await asyncio.sleep(0)
    await cancel_and_wait(task, None)
    assert task.cancelled()


async def test_a_cancellation_aimed_at_the_caller_propagates() -> None:
    """The old ``cancel(); suppress(CancelledError): await task`` returned normally here."""
    stopping, release = asyncio.Event(), asyncio.Event()

    async def stubborn() -> None:
        # Takes a while to stop: the caller is cancelled while it waits.
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopping.set()
            await release.wait()
            raise

    async def shutdown(task: asyncio.Task[None], reached: list[str]) -> None:
        await cancel_and_wait(task)
        reached.append("after")

    reached: list[str] = []
    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    caller = asyncio.create_task(shutdown(task, reached))
    await stopping.wait()
    caller.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert reached == []


async def test_a_task_that_failed_is_logged_and_shutdown_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR):
        await cancel_and_wait(task)
    assert "a background task had failed" in caplog.text
