"""Webhook delivery: the domain's events into a queue, and batches from it POSTed to the app.

Each POST is ``{"events": [...]}`` signed with ``WS_WEBHOOK_SECRET`` in the ``Gateway-Signature``
header (``realtime_gateway_protocol.signatures``: the receiver verifies it in constant time). A batch
is retried, with exponential backoff and jitter, until the app answers 2xx: a non-2xx answer, a
timeout (``WS_WEBHOOK_TIMEOUT``: an endpoint that hangs costs one timeout per attempt) and an
unreachable app are all retried. Only then is the batch acknowledged and the next one taken, so
delivery is at least once, and the app drops duplicates by each event's ``id``.

A batch is POSTed in bodies of at most ``WS_WEBHOOK_BATCH_BYTES`` (an event larger than that alone),
and a body the app refuses as too large (413) is halved until it fits: a batch counted in events
only reached hundreds of MB with ``publish`` events, the app's body limit refused it on every
attempt, and everything queued behind it waited for ever. An event refused alone that is larger
than ``WS_WEBHOOK_BATCH_BYTES`` and than any body the app took is one it can never take: it is
dropped, counted and logged (its ``id`` and ``type``), not retried; a smaller one is retried. While a
batch is being delivered this replica claims it again every third of ``WS_WEBHOOK_CLAIM_IDLE``, so
no live replica's batch is taken over however long its retries wait.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from realtime_gateway_protocol.backoff import backoff_delay
from realtime_gateway_protocol.signatures import HEADER, sign
from realtime_gateway_protocol.tasks import cancel_and_wait, raise_if_cancelled
from realtime_gateway_protocol.wire_json import dumps
from shared.bus import BusUnavailable
from ws_service.domain.telemetry import Count, Labelled
from ws_service.webhooks.queue import Batch, WebhookQueue

__all__ = ["Deliverer", "QueueSink", "Target"]

log = logging.getLogger(__name__)


class QueueSink:
    """Implements the domain's ``EventSink``: encode once, queue without waiting. A full queue
    drops the event, counted at once and logged at most once a second (with how many)."""

    def __init__(
        self,
        queue: WebhookQueue,
        events: Labelled,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._queue = queue
        self._queued = events.labels("queued")
        self._dropped = events.labels("dropped")
        self._monotonic = monotonic
        self._unlogged = 0
        self._logged_at = float("-inf")

    def emit(self, event: dict[str, Any]) -> None:
        try:
            encoded = dumps(event)
        except ValueError:
            log.exception("webhook event not encodable", extra={"type": event.get("type")})
            self.dropped(1)
            return
        if self._queue.put(encoded):
            self._queued.inc()
        else:
            self.dropped(1)

    def dropped(self, count: int) -> None:
        self._dropped.inc(count)
        self._unlogged += count
        now = self._monotonic()
        if now - self._logged_at >= 1.0:
            log.warning(
                "webhook queue full: events dropped",
                extra={"dropped": self._unlogged, "hint": "raise WS_WEBHOOK_QUEUE or fix the app"},
            )
            self._unlogged = 0
            self._logged_at = now


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    secrets: tuple[str, ...]
    """The first signs; more while rotating (a ``v1=`` each)."""
    timeout: float
    batch: int
    batch_bytes: int = 512 * 1024
    """A POST's body at most, unless one event is larger (it then goes alone)."""
    retry_base: float = 0.5
    retry_cap: float = 30.0
    keep_every: float = 10.0
    """Seconds between two claims of the batch being delivered (a third of the claim idle)."""


TOO_LARGE = 413


def bodies(events: list[str], limit: int) -> Iterator[list[str]]:
    """``events`` in order, cut into runs whose body (``{"events":[...]}``) is at most ``limit``
    bytes; an event larger than that on its own."""
    run: list[str] = []
    size = _EMPTY_BODY
    for event in events:
        cost = len(event.encode()) + (1 if run else 0)
        if run and size + cost > limit:
            yield run
            run, size, cost = [], _EMPTY_BODY, cost - 1
        run.append(event)
        size += cost
    if run:
        yield run


def _body(events: list[str]) -> bytes:
    return ('{"events":[' + ",".join(events) + "]}").encode()


_EMPTY_BODY = len(_body([]))


class Deliverer:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        queue: WebhookQueue,
        target: Target,
        *,
        posts: Labelled,
        delivered: Count,
        undeliverable: Count,
    ) -> None:
        self._session = session
        self._queue = queue
        self._target = target
        self._posts = posts
        self._delivered = delivered
        self._undeliverable = undeliverable
        self._largest_taken = 0
        """The largest body the app has answered 2xx to."""

    async def run(self) -> None:
        """Deliver forever, one batch at a time."""
        attempt = 0
        while True:
            # A cancel redis-py's blocking read swallowed (Python 3.11) ends the loop here.
            raise_if_cancelled()
            try:
                batch = await self._queue.take(self._target.batch)
                if not batch.ids:
                    continue
                delivered = await self._deliver(batch) if batch.events else 0
                await self._queue.ack(batch)
            except BusUnavailable as exc:
                log.warning("webhook queue unreachable", extra={"error": str(exc)})
                await asyncio.sleep(self._delay(attempt))
                attempt += 1
                continue
            except Exception:
                # A bug must not end delivery for the life of the process.
                log.exception("webhook delivery failed")
                await asyncio.sleep(self._delay(attempt))
                attempt += 1
                continue
            attempt = 0
            self._delivered.inc(delivered)

    async def _deliver(self, batch: Batch) -> int:
        """Every event of ``batch`` delivered, in order, but those refused alone as too large;
        returns how many were delivered."""
        keeper = asyncio.get_running_loop().create_task(self._keep(batch))
        try:
            parts = deque(bodies(batch.events, self._target.batch_bytes))
            delivered = 0
            while parts:
                events = parts.popleft()
                if await self._post_until_answered(events):
                    delivered += len(events)
                elif len(events) > 1:
                    half = len(events) // 2
                    parts.extendleft([events[half:], events[:half]])
                else:
                    self._drop_undeliverable(events[0])
            return delivered
        finally:
            await cancel_and_wait(keeper)

    async def _post_until_answered(self, events: list[str]) -> bool:
        """True once the app took ``events`` (2xx), False when it refused them as too large and
        they can be cut, or, alone, are larger than any body it took and than
        ``WS_WEBHOOK_BATCH_BYTES``; anything else is tried again, with backoff. A 413 for a body
        the app should take is the app's passing fault (a proxy's limit during a deploy): it
        dropped every small event of a 3 s window for good (an outside probe)."""
        body = _body(events)
        attempt = 0
        while (status := await self._post(body)) is None or not 200 <= status < 300:
            if status == TOO_LARGE and (
                len(events) > 1 or len(body) > max(self._largest_taken, self._target.batch_bytes)
            ):
                return False
            await asyncio.sleep(self._delay(attempt))
            attempt += 1
        self._largest_taken = max(self._largest_taken, len(body))
        return True

    def _drop_undeliverable(self, event: str) -> None:
        self._undeliverable.inc()
        head = event[:2048]  # the id and type come first; never parse a large event whole
        log.error(
            "webhook event dropped: the endpoint refuses it as too large (413) on its own",
            extra={
                "bytes": len(event.encode()),
                "event_id": _field(head, "id"),
                "event_type": _field(head, "type"),
                "hint": "raise the app's body limit above the largest event",
            },
        )

    async def _keep(self, batch: Batch) -> None:
        """Claim the batch again now and then while it is delivered, however long that takes."""
        while True:
            await asyncio.sleep(self._target.keep_every)
            try:
                await self._queue.keep(batch)
            except BusUnavailable as exc:
                log.warning("webhook batch not kept: redis unreachable", extra={"error": str(exc)})

    async def _post(self, body: bytes) -> int | None:
        """One attempt: the app's status, or None without an answer. The signature is made
        afresh, so a late retry is within its tolerance."""
        target = self._target
        headers = {"Content-Type": "application/json", HEADER: sign(body, target.secrets)}
        try:
            async with self._session.post(
                target.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=target.timeout),
                allow_redirects=False,
            ) as response:
                status = response.status
        except TimeoutError:
            self._posts.labels("timeout").inc()
            log.warning("webhook endpoint timed out", extra={"timeout": target.timeout})
            return None
        except aiohttp.ClientError as exc:
            self._posts.labels("unreachable").inc()
            log.warning("webhook endpoint unreachable", extra={"error": str(exc)})
            return None
        ok = 200 <= status < 300
        self._posts.labels("ok" if ok else "too_large" if status == TOO_LARGE else "refused").inc()
        if not ok:
            log.warning(
                "webhook endpoint refused a batch", extra={"status": status, "bytes": len(body)}
            )
        return status

    def _delay(self, attempt: int) -> float:
        return backoff_delay(
            attempt, self._target.retry_base, self._target.retry_cap, random.random(), floor=0.5
        )


def _field(head: str, name: str) -> str | None:
    """A string field near the start of an event's JSON (our own encoding: ``"name":"value"``)."""
    marker = f'"{name}":"'
    start = head.find(marker)
    if start < 0:
        return None
    start += len(marker)
    end = head.find('"', start)
    return head[start:end] if end > 0 else None
