"""The event bus across processes: Redis pub/sub, for N auth and N ws replicas.

Redis pub/sub forgets what it could not deliver, so the bus says when it was cut off: ``connected``
feeds ``/readyz``, ``publish`` raises :class:`BusUnavailable` (the caller keeps an outbox), and every
reconnection runs the reconnect listeners once the subscriptions are back, so a ws replica can
reconcile its live sockets against what it may have missed.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from realtime_gateway_protocol.backoff import backoff_delay
from shared.bus import (
    EventBus,
    Handler,
    InProcessBus,
    ReconnectListener,
    Unsubscribe,
)
from shared.redis.write import write

__all__ = ["RedisBus", "open_bus"]

_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)

log = logging.getLogger(__name__)


class RedisBus:
    """Fan-out through Redis: every replica subscribed to a topic gets each message once.

    One subscriber connection carries every topic; a topic is subscribed while at least one local
    handler wants it. Messages published by this process come back through Redis like any other.
    """

    def __init__(
        self,
        url: str,
        *,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
        ping_interval: float = 5.0,
        socket_timeout: float = 2.0,
    ) -> None:
        self._url = url
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._ping_interval = ping_interval
        self._socket_timeout = socket_timeout
        self._handlers: dict[str, dict[object, Handler]] = {}
        self._listeners: list[ReconnectListener] = []
        self._publisher: Redis | None = None
        self._subscriber: Redis | None = None
        self._reader: asyncio.Task[None] | None = None
        self._listener_tasks: set[asyncio.Task[None]] = set()
        self._confirmed: set[str] = set()
        self._connected = False
        self._closing = False
        self._wanted_changed = asyncio.Event()
        self._state_changed = asyncio.Event()
        self._first_attempt_done = asyncio.Event()

    @property
    def connected(self) -> bool:
        """True while the subscriber connection is up with every topic subscribed."""
        return self._connected

    async def start(self) -> None:
        """Start the reader; return after the first connection attempt, which may have failed.

        A replica whose Redis is down at start-up still serves local traffic and keeps retrying;
        an error that retrying cannot cure (Redis refusing SUBSCRIBE, say) is raised here.
        """
        if self._reader is not None:
            raise RuntimeError("RedisBus.start() was already called")
        self._publisher = self._client(retries=1)
        self._subscriber = self._client(retries=0)
        self._reader = asyncio.create_task(self._run(), name="redis-bus-reader")
        await self._first_attempt_done.wait()
        if self._reader.done():
            self._reader.result()

    async def close(self) -> None:
        """Stop the reader and drop both connections.

        ``_closing`` backs up the cancellation: on Python 3.11 a cancel that lands as redis-py's
        read timeout expires can be swallowed, and the reader must still stop (the syncer re-raises a
        swallowed cancel itself: one once held every shutdown for 15 s).
        """
        self._closing = True
        tasks = [t for t in (self._reader, *self._listener_tasks) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for client in (self._publisher, self._subscriber):
            if client is not None:
                await client.aclose()
        self._handlers.clear()
        self._listeners.clear()

    async def publish(self, topic: str, payload: str) -> None:
        """Hand ``payload`` to Redis as-is; raise :class:`BusUnavailable` if Redis cannot take it.

        A PUBLISH is never sent twice: once it has left, a lost reply raises
        :class:`~shared.bus.BusOutcomeUnknown` (the message may be on its way), and the
        caller must not make up for it by delivering it itself. Receivers then see it once or not
        at all; the one caller that re-sends (auth's outbox) sends revocations, which are
        idempotent. Deduplicating on the receiving side instead would put an id in every payload and
        a table of recent ids in every replica.
        """
        if self._publisher is None:
            raise RuntimeError("RedisBus.start() must be awaited before publish()")
        await write(self._publisher, "PUBLISH", topic, payload, idempotent=False)

    def subscribe(self, topic: str, handler: Handler) -> Unsubscribe:
        token = object()
        handlers = self._handlers.setdefault(topic, {})
        handlers[token] = handler
        if len(handlers) == 1:
            self._wanted_changed.set()

        def unsubscribe() -> None:
            current = self._handlers.get(topic)
            if current is None or current.pop(token, None) is None:
                return
            if not current:
                del self._handlers[topic]
                self._wanted_changed.set()

        return unsubscribe

    def add_reconnect_listener(self, listener: ReconnectListener) -> Unsubscribe:
        """Register ``listener`` for every reconnection; returns a function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    async def wait_synced(self) -> None:
        """Wait until Redis has confirmed the subscription of every topic that has a handler.

        ``subscribe`` is synchronous, so a caller that must not miss the next message (a test, or a
        replica acknowledging a client's subscription) awaits this first.
        """
        while not (self._connected and self._confirmed == set(self._handlers)):
            await self._state_changed.wait()

    def _client(self, *, retries: int) -> Redis:
        return Redis.from_url(
            self._url,
            decode_responses=True,
            socket_connect_timeout=self._socket_timeout,
            socket_timeout=self._socket_timeout,
            retry=Retry(NoBackoff(), retries),
        )

    async def _run(self) -> None:
        """The reader task; an error that reconnecting cannot cure is logged and ends it."""
        try:
            await self._reconnect_forever()
        except Exception:
            log.exception("redis bus reader stopped")
            raise
        finally:
            self._first_attempt_done.set()

    async def _reconnect_forever(self) -> None:
        failures = 0
        reconnecting = False
        while not self._closing:
            try:
                pubsub = await self._connect()
            except _REDIS_DOWN as exc:
                failures += 1
                log.warning("redis bus cannot connect", extra={"error": str(exc)})
                self._first_attempt_done.set()
            else:
                failures = 1
                self._set_connected(True)
                self._first_attempt_done.set()
                if reconnecting:
                    self._notify_reconnected()
                try:
                    await self._serve(pubsub)
                except _REDIS_DOWN as exc:
                    log.warning("redis bus connection lost", extra={"error": str(exc)})
                finally:
                    self._set_connected(False)
                    await _discard(pubsub)
            reconnecting = True
            delay = backoff_delay(
                failures, self._backoff_base, self._backoff_cap, random.random(), floor=0.5
            )
            await asyncio.sleep(delay)

    async def _connect(self) -> PubSub:
        """Open the subscriber connection and subscribe every wanted topic before going live."""
        assert self._subscriber is not None
        pubsub = self._subscriber.pubsub()
        try:
            await pubsub.connect()  # type: ignore[no-untyped-call]  # unannotated in redis-py
            self._confirmed = set()
            topics = set(self._handlers)
            if topics:
                await pubsub.subscribe(*topics)
            while not topics <= self._confirmed:
                message = await pubsub.get_message(timeout=self._socket_timeout)
                if message is None:
                    raise RedisTimeoutError("Redis did not confirm the subscriptions")
                self._handle(message)
        except BaseException:
            await _discard(pubsub)
            raise
        return pubsub

    async def _serve(self, pubsub: PubSub) -> None:
        """Read until the connection fails; a silent peer is detected by unanswered PINGs."""
        syncer = asyncio.create_task(self._sync_subscriptions(pubsub), name="redis-bus-sync")
        loop = asyncio.get_running_loop()
        last_seen = loop.time()
        try:
            while not self._closing:
                message = await pubsub.get_message(timeout=self._ping_interval)
                if message is not None:
                    last_seen = loop.time()
                    self._handle(message)
                elif loop.time() - last_seen > 2 * self._ping_interval:
                    raise RedisTimeoutError("Redis stopped answering PING")
                else:
                    await pubsub.ping()
                if syncer.done():
                    syncer.result()
        finally:
            syncer.cancel()
            await asyncio.wait([syncer])

    async def _sync_subscriptions(self, pubsub: PubSub) -> None:
        """Bring Redis to the wanted topic set; the only writer of SUBSCRIBE/UNSUBSCRIBE."""
        requested = set(self._confirmed)
        self._wanted_changed.set()
        while True:
            await self._wanted_changed.wait()
            self._wanted_changed.clear()
            wanted = set(self._handlers)
            if added := wanted - requested:
                await pubsub.subscribe(*added)
            if removed := requested - wanted:
                await pubsub.unsubscribe(*removed)
            requested = wanted
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # redis-py swallowed the cancel (a stop at shutdown unsubscribes everything):
                # waiting again would leave the reader, and the process, hanging on close.
                raise asyncio.CancelledError

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message":
            self._dispatch(message["channel"], message["data"])
        elif kind == "subscribe":
            self._confirmed.add(message["channel"])
            self._pulse()
        elif kind == "unsubscribe":
            self._confirmed.discard(message["channel"])
            self._pulse()

    def _dispatch(self, topic: str, payload: str) -> None:
        for handler in tuple(self._handlers.get(topic, {}).values()):
            try:
                handler(topic, payload)
            except Exception:
                log.exception("event handler failed", extra={"topic": topic})

    def _set_connected(self, connected: bool) -> None:
        if connected != self._connected:
            self._connected = connected
            log.info("redis bus %s", "connected" if connected else "disconnected")
            self._pulse()

    def _pulse(self) -> None:
        """Wake every ``wait_synced`` caller so it re-checks its condition."""
        self._state_changed.set()
        self._state_changed = asyncio.Event()

    def _notify_reconnected(self) -> None:
        for listener in tuple(self._listeners):
            task = asyncio.create_task(_run_listener(listener), name="redis-bus-reconnected")
            self._listener_tasks.add(task)
            task.add_done_callback(self._listener_tasks.discard)


async def _run_listener(listener: ReconnectListener) -> None:
    try:
        await listener()
    except Exception:
        log.exception("reconnect listener failed")


async def _discard(pubsub: PubSub) -> None:
    """Drop a subscriber connection that may already be broken."""
    try:
        await pubsub.aclose()
    except _REDIS_DOWN as exc:
        log.debug("closing a broken redis connection failed", extra={"error": str(exc)})


async def open_bus(redis_url: str | None) -> EventBus:
    """The in-process bus when ``redis_url`` is empty (embedded mode), else a started RedisBus.

    The RedisBus comes back started even if Redis is down: it retries by itself, and says so
    through the ``EventBus`` members (``connected``, reconnect listeners). Close either kind with
    ``await bus.close()``.
    """
    if not redis_url or not redis_url.strip():
        return InProcessBus()
    bus = RedisBus(redis_url.strip())
    await bus.start()
    return bus
