"""The micro-batcher on a fake store: who shares a call, what each caller gets back."""

from __future__ import annotations

import asyncio

import pytest

from shared.batch import Batcher


async def settle() -> None:
    """Let every task that can run, run (a few loop iterations, no clock involved)."""
    for _ in range(10):
        await asyncio.sleep(0)


class Store:
    """Answers each item with its double; ``gate`` holds calls until it is set."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: BaseException | None = None

    async def call(self, items: list[int]) -> list[int]:
        self.calls.append(items)
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return [2 * item for item in items]


async def test_requests_of_one_loop_iteration_share_one_call() -> None:
    store = Store()
    sizes: list[int] = []
    batcher = Batcher(store.call, on_batch=sizes.append)
    results = await asyncio.gather(batcher.run([1]), batcher.run([2, 3]), batcher.run([4]))
    assert results == [[2], [4, 6], [8]]
    assert store.calls == [[1, 2, 3, 4]]
    assert sizes == [4]
    assert await batcher.run([]) == []


async def test_requests_made_while_a_batch_is_out_go_together_in_the_next() -> None:
    store = Store()
    store.gate.clear()
    batcher = Batcher(store.call)
    first = asyncio.ensure_future(batcher.run([1]))
    await settle()
    assert store.calls == [[1]]
    later = [asyncio.ensure_future(batcher.run([n])) for n in (2, 3, 4)]
    await settle()
    assert store.calls == [[1]], "nothing more is sent while a batch is out"
    store.gate.set()
    assert await first == [2]
    assert await asyncio.gather(*later) == [[4], [6], [8]]
    assert store.calls == [[1], [2, 3, 4]]


async def test_an_error_reaches_every_request_of_its_batch_and_the_next_batch_works() -> None:
    store = Store()
    store.fail = ConnectionError("down")
    batcher = Batcher(store.call)
    outcomes = await asyncio.gather(batcher.run([1]), batcher.run([2]), return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [ConnectionError, ConnectionError]
    store.fail = None
    assert await batcher.run([5]) == [10]


async def test_a_cancelled_caller_leaves_the_others_their_results() -> None:
    store = Store()
    store.gate.clear()
    batcher = Batcher(store.call)
    gone = asyncio.ensure_future(batcher.run([1]))
    stays = asyncio.ensure_future(batcher.run([2]))
    await settle()
    gone.cancel()
    store.gate.set()
    assert await stays == [4]
    assert gone.cancelled()


async def test_a_request_whose_caller_left_before_it_was_sent_is_not_sent() -> None:
    store = Store()
    store.gate.clear()
    batcher = Batcher(store.call)
    first = asyncio.ensure_future(batcher.run([1]))
    await settle()
    gone = asyncio.ensure_future(batcher.run([2]))
    stays = asyncio.ensure_future(batcher.run([3]))
    await asyncio.sleep(0)  # both requests are made, not sent: the first batch is out
    gone.cancel()
    store.gate.set()
    assert await first == [2]
    assert await stays == [6]
    assert store.calls == [[1], [3]]


async def test_a_call_answering_the_wrong_number_of_results_fails_its_requests() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    batcher = Batcher(short)
    with pytest.raises(RuntimeError, match="2 items got 1 results"):
        await asyncio.gather(batcher.run([1]), batcher.run([2]))


async def test_large_batches_are_split_at_max_items_without_splitting_a_request() -> None:
    store = Store()
    batcher = Batcher(store.call, max_items=3)
    results = await asyncio.gather(
        batcher.run([1, 2]), batcher.run([3]), batcher.run([4, 5, 6, 7]), batcher.run([8])
    )
    assert results == [[2, 4], [6], [8, 10, 12, 14], [16]]
    assert store.calls == [[1, 2, 3], [4, 5, 6, 7], [8]]


async def test_close_cancels_what_is_out_and_what_waits() -> None:
    store = Store()
    store.gate.clear()
    batcher = Batcher(store.call)
    out = asyncio.ensure_future(batcher.run([1]))
    await settle()
    waiting = asyncio.ensure_future(batcher.run([2]))
    await settle()
    await batcher.close()
    for request in (out, waiting):
        with pytest.raises(asyncio.CancelledError):
            await request
    assert store.calls == [[1]]
    with pytest.raises(RuntimeError, match="closed"):
        await batcher.run([3])
