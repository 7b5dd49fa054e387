"""Webhook delivery: the domain's events into a queue, and batches from it POSTed to the app.

Each POST is ``{"events": [...]}`` signed with ``WS_WEBHOOK_SECRET`` in the ``Gateway-Signature``
header (``realtime_gateway_protocol.signatures``: the receiver verifies it in constant time). A batch
is retried, with exponential backoff and jitter, until the app answers 2xx: a non-2xx answer, a
timeout (``WS_WEBHOOK_TIMEOUT``: an endpoint that hangs costs one timeout per attempt) and an
unreachable app are all retried. Only then is the batch acknowledged and the next one taken, so
delivery is at least once, and the app drops duplicates by each event's ``id``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from realtime_gateway_protocol.backoff import backoff_delay
from realtime_gateway_protocol.signatures import HEADER, sign
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
    retry_base: float = 0.5
    retry_cap: float = 30.0


class Deliverer:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        queue: WebhookQueue,
        target: Target,
        *,
        posts: Labelled,
        delivered: Count,
    ) -> None:
        self._session = session
        self._queue = queue
        self._target = target
        self._posts = posts
        self._delivered = delivered

    async def run(self) -> None:
        """Deliver forever, one batch at a time."""
        attempt = 0
        while True:
            try:
                batch = await self._queue.take(self._target.batch)
                if not batch.ids:
                    continue
                if batch.events:
                    await self._deliver(batch)
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
            self._delivered.inc(len(batch.events))

    async def _deliver(self, batch: Batch) -> None:
        body = ('{"events":[' + ",".join(batch.events) + "]}").encode()
        attempt = 0
        while not await self._post(body):
            await asyncio.sleep(self._delay(attempt))
            attempt += 1
            try:
                await self._queue.keep(batch)
            except BusUnavailable as exc:
                log.warning("webhook batch not kept: redis unreachable", extra={"error": str(exc)})

    async def _post(self, body: bytes) -> bool:
        """One attempt; the signature is made afresh, so a late retry is within its tolerance."""
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
                ok = 200 <= response.status < 300
        except TimeoutError:
            self._posts.labels("timeout").inc()
            log.warning("webhook endpoint timed out", extra={"timeout": target.timeout})
            return False
        except aiohttp.ClientError as exc:
            self._posts.labels("unreachable").inc()
            log.warning("webhook endpoint unreachable", extra={"error": str(exc)})
            return False
        self._posts.labels("ok" if ok else "refused").inc()
        if not ok:
            log.warning("webhook endpoint refused a batch", extra={"status": response.status})
        return ok

    def _delay(self, attempt: int) -> float:
        return backoff_delay(
            attempt, self._target.retry_base, self._target.retry_cap, random.random(), floor=0.5
        )
