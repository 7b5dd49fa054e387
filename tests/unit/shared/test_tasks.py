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


async def test_a_task_that_swallowed_its_cancel_is_cancelled_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Python 3.11: a cancel landing as an ``asyncio.timeout`` expires comes out as a
    ``TimeoutError``; a loop that logs its failures and goes on took it for one, and the
    shutdown waited for ever (auth_service stopping on a Redis user refused its channels)."""
    monkeypatch.setattr("realtime_gateway_protocol.tasks.RECANCEL_AFTER", 0.05, raising=False)
    swallowed = []

    async def loop() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(1)  # taken for a failure, and the loop goes on

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING):
        async with asyncio.timeout(5):
            await cancel_and_wait(task)
    assert task.cancelled() and swallowed == [1]
    assert "a cancelled task went on; cancelled again" in caplog.text
