"""Where webhook events wait for delivery: a bounded deque in this process, or a Redis stream.

Both hand out batches to one deliverer per replica and forget a batch only once it is acknowledged
(after a 2xx), so an event is delivered at least once. ``put`` never waits and never raises: it
returns False when the queue is full, and the caller counts and logs the event as dropped.

In Redis the events of every replica share one stream, ``{webhooks}:events`` (every key of this
family carries the ``{webhooks}`` hash tag, so a Redis Cluster keeps them on one slot), read by one
consumer group, ``delivery``, in which each replica is a consumer. A delivered batch is XACKed and
XDELeted, so the stream's length is what is still to deliver, and a script refuses an XADD beyond
``limit`` (the events are then dropped and counted, never trimmed unseen). A replica that dies
leaves its unacknowledged batch pending; once it has been idle ``claim_idle`` seconds another
replica takes it over with XAUTOCLAIM. A replica retrying a batch keeps it by claiming it again on
every attempt, so it is not taken from under it while alive.

Each process joins the group under a name of its own, so every restart used to leave a consumer
behind for good (a rolling deploy of ten replicas, ten a day). A replica leaves the group when it
closes with nothing pending, and every ``PRUNE_EVERY`` seconds removes the consumers idle for
``PRUNE_IDLE`` with nothing pending (a SIGKILLed replica's, once its batch was taken over). Both in
one script, so an entry claimed meanwhile is never dropped with its consumer; a live replica asks
for entries every ``block`` seconds, so it is never idle that long.

``put`` only appends to a local buffer, which a writer task flushes with one script call per
batch: an event is in Redis a round trip after it happened, and only the events of that moment are
lost with a replica's SIGKILL. While Redis is unreachable the buffer holds up to ``limit`` events.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import ResponseError

from realtime_gateway_protocol.backoff import backoff_delay
from realtime_gateway_protocol.tasks import cancel_and_wait
from shared.bus import BusUnavailable
from shared.redis.connect import RedisClient
from ws_service.redis.client import unavailable_as_bus_error

__all__ = ["STREAM", "Batch", "MemoryQueue", "RedisQueue", "WebhookQueue"]

STREAM = "{webhooks}:events"
GROUP = "delivery"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Batch:
    ids: list[str]
    """Queue positions (stream entry ids in Redis), acknowledged together."""
    events: list[str]
    """Each event's JSON, as queued (fewer than ``ids`` when some entry lost its event)."""


class WebhookQueue(Protocol):
    def put(self, event: str) -> bool:
        """Queue one event's JSON; False (nothing queued) when the queue is full."""

    async def take(self, limit: int) -> Batch:
        """Up to ``limit`` events not yet delivered; waits for at least one."""

    async def keep(self, batch: Batch) -> None:
        """Still being delivered: do not hand it to another replica (called before each retry)."""

    async def ack(self, batch: Batch) -> None:
        """Delivered: forget it."""

    async def close(self) -> None: ...


class MemoryQueue:
    """The embedded queue: bounded, and lost when the process stops (the docs say so)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._events: deque[str] = deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._events)

    def put(self, event: str) -> bool:
        if len(self._events) >= self._limit:
            return False
        self._events.append(event)
        self._ready.set()
        return True

    async def take(self, limit: int) -> Batch:
        while not self._events:
            self._ready.clear()
            await self._ready.wait()
        events = [self._events[i] for i in range(min(limit, len(self._events)))]
        return Batch([str(i) for i in range(len(events))], events)

    async def keep(self, batch: Batch) -> None:
        return

    async def ack(self, batch: Batch) -> None:
        """The one deliverer takes from the front: the batch is the first ``len`` events."""
        for _ in batch.ids:
            self._events.popleft()

    async def close(self) -> None:
        return


# KEYS: stream. ARGV: limit, event... Returns how many were added (the first ones).
_ADD = """
local room = tonumber(ARGV[1]) - redis.call('XLEN', KEYS[1])
local added = 0
for i = 2, #ARGV do
  if added >= room then break end
  redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
  added = added + 1
end
return added
"""


# KEYS: stream. ARGV: group, idle ms, a consumer to remove at any idle ('' for none).
# Removes the consumers with nothing pending that are idle that long (or named); returns how many.
_PRUNE = """
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return 0 end
local removed = 0
for _, consumer in ipairs(consumers) do
  local fields = {}
  for i = 1, #consumer, 2 do fields[consumer[i]] = consumer[i + 1] end
  if fields['pending'] == 0
      and (fields['name'] == ARGV[3] or fields['idle'] >= tonumber(ARGV[2])) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], fields['name'])
    removed = removed + 1
  end
end
return removed
"""

PRUNE_EVERY = 600.0
"""Seconds between two prunes of the group's dead consumers, by each replica."""
PRUNE_IDLE = 3600.0
"""Seconds a consumer with nothing pending must have been idle to be pruned. Removing a live one
would be harmless (its next read joins again); the wait only keeps the listing readable."""


class RedisQueue:
    """Implements ``WebhookQueue`` over a stream shared by every replica; ``consumer`` names this
    replica in the group. Events that did not fit are reported through ``on_dropped(count)``."""

    def __init__(
        self,
        redis: RedisClient,
        consumer: str,
        *,
        limit: int,
        claim_idle: float,
        on_dropped: DroppedListener,
        block: float = 1.0,
    ) -> None:
        self._redis = redis
        self._consumer = consumer
        self._limit = limit
        self._claim_idle_ms = int(claim_idle * 1000)
        self._on_dropped = on_dropped
        self._block_ms = int(block * 1000)
        self._add = redis.register_script(_ADD)
        self._prune = redis.register_script(_PRUNE)
        self._pruned_at: float | None = None
        self._buffer: deque[str] = deque()
        self._wake = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._writer: asyncio.Task[None] | None = None
        self._group_ready = False

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_forever())

    def put(self, event: str) -> bool:
        if len(self._buffer) >= self._limit:
            return False
        self._buffer.append(event)
        self._empty.clear()
        self._wake.set()
        return True

    async def _write_forever(self) -> None:
        attempt = 0
        while True:
            if not self._buffer:
                self._wake.clear()
                await self._wake.wait()
            batch = [self._buffer[i] for i in range(min(500, len(self._buffer)))]
            try:
                with unavailable_as_bus_error():
                    added = int(await self._add(keys=[STREAM], args=[self._limit, *batch]))
            except BusUnavailable as exc:
                delay = backoff_delay(attempt, 0.1, 5.0, random.random(), floor=0.5)
                attempt += 1
                log.warning(
                    "webhook events wait in memory: redis unreachable",
                    extra={"error": str(exc), "buffered": len(self._buffer)},
                )
                await asyncio.sleep(delay)
                continue
            attempt = 0
            for _ in batch:
                self._buffer.popleft()
            if not self._buffer:
                self._empty.set()
            if added < len(batch):
                self._on_dropped(len(batch) - added)

    async def take(self, limit: int) -> Batch:
        """Pending entries of a dead consumer first (idle ``claim_idle``), then new ones."""
        try:
            with unavailable_as_bus_error():
                await self._ensure_group()
                await self._prune_now_and_then()
                claimed: Any = await self._redis.xautoclaim(
                    STREAM, GROUP, self._consumer, self._claim_idle_ms, "0-0", count=limit
                )
                entries = claimed[1]
                if not entries:
                    found: Any = await self._redis.xreadgroup(
                        GROUP, self._consumer, {STREAM: ">"}, count=limit, block=self._block_ms
                    )
                    entries = found[0][1] if found else []
        except BusUnavailable:
            self._group_ready = False  # Redis may have restarted empty: create it again
            raise
        # An entry without its event (deleted meanwhile, or not ours) is acknowledged unsent.
        return Batch(
            [entry_id for entry_id, _ in entries],
            [fields["e"] for _, fields in entries if fields and "e" in fields],
        )

    async def keep(self, batch: Batch) -> None:
        with unavailable_as_bus_error():
            ids: Any = batch.ids
            await self._redis.xclaim(STREAM, GROUP, self._consumer, 0, ids, justid=True)

    async def ack(self, batch: Batch) -> None:
        with unavailable_as_bus_error():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xack(STREAM, GROUP, *batch.ids)
                pipe.xdel(STREAM, *batch.ids)
                await pipe.execute()

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self._redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def _prune_now_and_then(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        removed = await self._prune(keys=[STREAM], args=[GROUP, int(PRUNE_IDLE * 1000), ""])
        if removed:
            log.info("webhook consumers pruned", extra={"count": int(removed)})

    async def close(self) -> None:
        """Flush what the buffer holds (briefly), stop the writer, and leave the group unless
        entries are pending for this replica (another takes them over). Call it once the
        deliverer has stopped, or its next read joins the group again."""
        if self._writer is not None:
            try:
                await asyncio.wait_for(self._empty.wait(), 1.0)
            except TimeoutError:
                log.warning("webhook events lost at shutdown", extra={"count": len(self._buffer)})
            await cancel_and_wait(self._writer)
            self._writer = None
        try:
            with unavailable_as_bus_error():
                await self._prune(keys=[STREAM], args=[GROUP, 2**62, self._consumer])
        except BusUnavailable as exc:
            log.warning("webhook consumer left in the group", extra={"error": str(exc)})


class DroppedListener(Protocol):
    def __call__(self, count: int) -> None: ...
