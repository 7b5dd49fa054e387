"""The event bus across processes: Redis pub/sub, for N auth and N ws replicas.

Redis pub/sub forgets what it could not deliver, so the bus says when it was cut off: ``connected``
feeds ``/readyz``, ``publish`` raises :class:`BusUnavailable` (the caller keeps an outbox), and
once the subscriptions are back after any loss (a Redis restart, a failover, a node of a Cluster
dying) the reconnect listeners run, so a ws replica can reconcile its live sockets against what it
may have missed.

Two kinds of topic (``shared.bus.is_sharded``): channel and presence topics are *sharded*
(``SPUBLISH``/``SSUBSCRIBE``, Redis 7): on a Cluster a message goes only to the shard that owns the
topic's slot, and the scripts that publish them run on that shard. Every other topic (revocations,
key announcements, any control topic added later) is *broadcast* (``PUBLISH``/``SUBSCRIBE``): a
Cluster forwards it to every node, so it reaches every replica whichever node it listens on.

Subscriptions ride on *links*, one subscriber connection each. On one server or behind Sentinels
there is a single link for every topic (Sentinel names the master at each connection, so a
failover is one reconnection). On a Cluster there is a link for the broadcast topics (to any node)
and one per master that owns a subscribed sharded topic; when a master dies, only its link is
lost, the other shards keep delivering, and its topics move to the replica promoted in its place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AuthenticationError,
    InvalidResponse,
    MovedError,
    RedisClusterException,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from realtime_gateway_protocol.backoff import backoff_delay
from shared.bus import (
    EventBus,
    Handler,
    InProcessBus,
    ReconnectListener,
    Unsubscribe,
    is_sharded,
)
from shared.redis.connect import (
    RedisClient,
    node_client,
    open_client,
    parse_redis_url,
    refresh_topology,
)
from shared.redis.write import write

__all__ = ["BusRefused", "RedisBus", "open_bus"]

_REDIS_DOWN = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    MovedError,
    RedisClusterException,
    InvalidResponse,
)
"""What reconnecting (after asking a Cluster again who owns what) can cure. ``InvalidResponse``
too: something else answering on Redis's address (a port taken for a moment, a proxy's error
page) stopped the link for good, and logouts reached no socket until a restart (an outside
probe); it is an outage like any other, retried until Redis answers again."""

_BROADCAST = ""
"""The key of the link that carries the broadcast topics (every topic, off a Cluster)."""

log = logging.getLogger(__name__)


_ACL_HINT = "the ACL of REDIS_URL's user (channels: &* or allchannels)"
"""What a refusal of Redis's asks to check: since Redis 7 a new ACL user has no channels."""

MOVED_SETTLE = 0.05
"""Seconds without another message after Redis dropped a moved slot's topics before they are
routed again (one topology refresh for a whole burst)."""


class BusRefused(Exception):
    """Redis refused this replica's credentials on its first connection: start-up stops."""


class _Moved(RedisConnectionError):
    """Redis unsubscribed a sharded topic this link still carries: its slot moved elsewhere."""


class RedisBus:
    """Fan-out through Redis: every replica subscribed to a topic gets each message once.

    A topic is subscribed while at least one local handler wants it. Messages published by this
    process come back through Redis like any other.
    """

    def __init__(
        self,
        url: str,
        *,
        backoff_base: float = 0.1,
        backoff_cap: float = 2.0,
        ping_interval: float = 5.0,
        socket_timeout: float = 2.0,
    ) -> None:
        self._target = parse_redis_url(url)
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._ping_interval = ping_interval
        self._socket_timeout = socket_timeout
        self._handlers: dict[str, dict[object, Handler]] = {}
        self._listeners: list[ReconnectListener] = []
        self._publisher: RedisClient | None = None
        self._cluster: RedisCluster | None = None
        """The publisher when it is a Cluster's client: its slot map routes the topics."""
        self._subscriber: RedisClient | None = None
        self._links: dict[str, _Link] = {}
        self._routes: dict[str, str | None] = {}
        self._listener_tasks: set[asyncio.Task[None]] = set()
        self._gap = False
        self._closing = False
        self._started = False  # start() has seen its first attempt: refusals are retried
        self._refusal: ResponseError | None = None
        """What Redis answered that stopped a link for good (NOPERM, say): check_subscriptions."""
        self._state_changed = asyncio.Event()

    @property
    def connected(self) -> bool:
        """True while the broadcast link is up and no other link is down: then every subscribed
        topic is, or is being, subscribed."""
        broadcast = self._links.get(_BROADCAST)
        return (
            broadcast is not None
            and broadcast.connected
            and not any(link.down for link in self._links.values())
        )

    async def start(self) -> None:
        """Start the links; return after the first connection attempt, which may have failed.

        A replica whose Redis is down at start-up still serves local traffic and keeps retrying;
        an error that retrying cannot cure (Redis refusing SUBSCRIBE, say) is raised here.
        """
        if self._publisher is not None:
            raise RuntimeError("RedisBus.start() was already called")
        self._publisher = open_client(self._target, timeout=self._socket_timeout, retries=1)
        if isinstance(self._publisher, RedisCluster):
            self._cluster = self._publisher
        else:
            # No retries: redis-py would reconnect a subscriber and subscribe again unseen,
            # hiding the gap the reconnect listeners are there for.
            self._subscriber = open_client(self._target, timeout=self._socket_timeout, retries=0)
        first = self._ensure_link(_BROADCAST)
        assert first is not None
        self._ensure_links()
        await first.first_attempt_done.wait()
        self._started = True
        if first.stopped:
            # Its first attempt ended it: it is still closing its connection when it says so,
            # and a check of ``done()`` alone let start-up go on with the link stopped for good.
            await asyncio.wait([first.task])
        if first.task.done():
            first.task.result()

    async def close(self) -> None:
        """Stop the links and drop every connection.

        ``_closing`` backs up the cancellation: on Python 3.11 a cancel that lands as redis-py's
        read timeout expires can be swallowed, and a link must still stop (the syncer re-raises a
        swallowed cancel itself: one once held every shutdown for 15 s).
        """
        self._closing = True
        links = list(self._links.values())
        tasks = [link.task for link in links] + list(self._listener_tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for link in links:
            await link.close()
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
        if is_sharded(topic):
            await write(self._publisher, "SPUBLISH", topic, payload, idempotent=False, key=topic)
        else:
            await write(self._publisher, "PUBLISH", topic, payload, idempotent=False)

    def subscribe(self, topic: str, handler: Handler) -> Unsubscribe:
        token = object()
        handlers = self._handlers.setdefault(topic, {})
        handlers[token] = handler
        if len(handlers) == 1:
            self._wanted_changed(topic)

        def unsubscribe() -> None:
            current = self._handlers.get(topic)
            if current is None or current.pop(token, None) is None:
                return
            if not current:
                del self._handlers[topic]
                self._wanted_changed(topic)

        return unsubscribe

    def add_reconnect_listener(self, listener: ReconnectListener) -> Unsubscribe:
        """Register ``listener`` for every reconnection; returns a function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    async def check_subscriptions(self, probes: Iterable[str] = ()) -> None:
        """Start-up, once the service subscribed its own topics: raise ``BusRefused`` when Redis
        refused one (an ACL user without those channels: Redis 7 gives a new user none), which
        stopped its link for good: the replica started "degraded" and ready, heard no
        revocation, and accepted a logged-out token (an outside probe). Return once every topic
        is confirmed, at once while Redis is down (an outage: the links retry), or after the
        socket timeout. ``probes``: topics of the kinds the service subscribes later (a
        client's channel), subscribed meanwhile and dropped after: an ACL user with the
        service's own topics alone (``&auth.*``) passed, and the first client's subscription
        stopped the link for good (outside probe K)."""
        dropped = [self.subscribe(topic, _ignored) for topic in probes]
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._socket_timeout):
                    while self._refusal is None and self.connected and not self._synced():
                        await self._state_changed.wait()
        finally:
            for unsubscribe in dropped:
                unsubscribe()
        if self._refusal is not None:
            raise BusRefused(
                f"Redis refused this replica's subscriptions ({self._refusal}): check {_ACL_HINT}"
            )

    async def wait_synced(self) -> None:
        """Wait until Redis has confirmed the subscription of every topic that has a handler.

        ``subscribe`` is synchronous, so a caller that must not miss the next message (a test, or a
        replica acknowledging a client's subscription) awaits this first.
        """
        while not self._synced():
            await self._state_changed.wait()

    # -- routing topics to links -----------------------------------------------------------

    def _route(self, topic: str) -> str | None:
        """The key of the link that carries ``topic``: a Cluster's sharded topic goes to the link
        of its slot's master (None while the slots are unknown), everything else to one link.
        Remembered until the next topology refresh: thousands of topics are routed per change."""
        cluster = self._cluster
        if cluster is None or not is_sharded(topic):
            return _BROADCAST
        if topic in self._routes:
            return self._routes[topic]
        try:
            node = cluster.get_node_from_key(topic)
        except RedisClusterException:
            node = None
        route = node.name if node is not None else None
        self._routes[topic] = route
        return route

    def _topics_of(self, key: str) -> set[str]:
        return {topic for topic in self._handlers if self._route(topic) == key}

    def _ensure_link(self, key: str | None) -> _Link | None:
        if key is None or self._publisher is None or self._closing:
            return None
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = _Link(self, key)
        return link

    def _ensure_links(self) -> None:
        """A running link for the broadcast topics and for every master that owns a topic."""
        for key in {_BROADCAST} | {self._route(topic) for topic in self._handlers}:
            self._ensure_link(key)

    def _wanted_changed(self, topic: str) -> None:
        link = self._ensure_link(self._route(topic))
        if link is not None:
            link.wanted_changed.set()
        if topic not in self._handlers:
            self._routes.pop(topic, None)
        self._pulse()

    async def _lost_track(self) -> None:
        """After a link failed: on a Cluster, ask again who owns which slot (a failover moved
        some), then move each topic to the link of its owner."""
        cluster = self._cluster
        if cluster is None:
            return
        try:
            await refresh_topology(cluster)
        except _REDIS_DOWN as exc:
            log.debug("cluster topology refresh failed", extra={"error": str(exc)})
        self._routes.clear()
        self._ensure_links()
        for link in self._links.values():
            link.wanted_changed.set()

    def _link_ended(self, link: _Link) -> None:
        """A link that had nothing left to carry is dropped (a new one starts when a topic comes
        back to its master); one stopped by an error stays, down, rather than fail again."""
        if link.stopped or self._closing:
            return
        if self._links.get(link.key) is link:
            del self._links[link.key]
        self._ensure_links()
        self._pulse()

    # -- state -----------------------------------------------------------------------------

    def _synced(self) -> bool:
        """Connected, and Redis confirmed every wanted topic on its link, and nothing else.
        Checked at every confirmation, so the usual answer (not yet) is found by counting."""
        if not self.connected:
            return False
        links = self._links.values()
        if sum(len(link.confirmed) for link in links) != len(self._handlers):
            return False
        if self._cluster is None:
            return self._links[_BROADCAST].confirmed == self._handlers.keys()
        return all(
            topic in self._handlers and self._route(topic) == link.key
            for link in links
            for topic in link.confirmed
        )

    def _lost(self) -> None:
        """A link went down, or could not come up: messages may have been missed."""
        self._gap = True
        self._pulse()

    def _pulse(self) -> None:
        """Wake every ``wait_synced`` caller so it re-checks its condition; once every link is
        back after a loss, run the reconnect listeners."""
        self._state_changed.set()
        self._state_changed = asyncio.Event()
        if self._gap and self._synced():
            self._gap = False
            log.info("redis bus reconnected")
            self._notify_reconnected()

    def _dispatch(self, topic: str, payload: str) -> None:
        for handler in tuple(self._handlers.get(topic, {}).values()):
            try:
                handler(topic, payload)
            except Exception:
                log.exception("event handler failed", extra={"topic": topic})

    def _notify_reconnected(self) -> None:
        for listener in tuple(self._listeners):
            task = asyncio.create_task(_run_listener(listener), name="redis-bus-reconnected")
            self._listener_tasks.add(task)
            task.add_done_callback(self._listener_tasks.discard)

    # -- for the links ---------------------------------------------------------------------

    async def _open(self, key: str) -> tuple[PubSub, RedisClient | None]:
        """A subscriber connection for link ``key`` and the client to close with it (None when
        the link reuses one: a single server's or Sentinel's, which finds the master itself)."""
        cluster = self._cluster
        if cluster is None:
            assert self._subscriber is not None
            return self._subscriber.pubsub(), None
        await cluster.initialize()
        node = cluster.get_random_node() if key == _BROADCAST else cluster.get_node(node_name=key)
        if node is None:
            raise RedisClusterException(f"node {key} left the cluster")
        client = node_client(self._target, node.host, int(node.port), timeout=self._socket_timeout)
        return client.pubsub(), client

    def _delay(self, failures: int) -> float:
        return backoff_delay(
            failures, self._backoff_base, self._backoff_cap, random.random(), floor=0.5
        )


class _Link:
    """One subscriber connection and the topics routed to it, kept subscribed across
    reconnections. It ends when it has nothing left to carry (a Cluster master that owns no
    subscribed topic any more), or when an error that reconnecting cannot cure stops it."""

    def __init__(self, bus: RedisBus, key: str) -> None:
        self.bus = bus
        self.key = key
        self.connected = False
        self.down = False
        """True after a failed attempt or a lost connection, until the next connection."""
        self.stopped = False
        """True once an error that reconnecting cannot cure ended the link."""
        self.confirmed: set[str] = set()
        self.wanted_changed = asyncio.Event()
        self.first_attempt_done = asyncio.Event()
        self._client: RedisClient | None = None
        self.task = asyncio.get_running_loop().create_task(
            self._run(), name=f"redis-bus-link{' ' + key if key else ''}"
        )

    def topics(self) -> set[str]:
        return self.bus._topics_of(self.key)

    @property
    def on_cluster(self) -> bool:
        return self.bus._cluster is not None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        try:
            await self._reconnect_forever()
        except BusRefused:
            self.down = self.stopped = True
            raise  # start() raises it: the service says it in one line and stops
        except Exception as exc:
            if isinstance(exc, ResponseError):
                # Redis refused a command (NOPERM): check_subscriptions says it in one line.
                log.error("redis bus link stopped", extra={"link": self.key, "reason": str(exc)})
                self.bus._refusal = exc
            else:
                log.exception("redis bus link stopped", extra={"link": self.key})
            self.down = self.stopped = True
            self.bus._pulse()
            raise
        finally:
            self.first_attempt_done.set()
            await self.close()
            self.bus._link_ended(self)

    async def _reconnect_forever(self) -> None:
        failures = 0
        bus = self.bus
        while not bus._closing and (self.key == _BROADCAST or self.topics()):
            try:
                pubsub = await self._connect()
            except _REDIS_DOWN as exc:
                if isinstance(exc, AuthenticationError) and not bus._started:
                    # Redis answers and refuses the credentials: a configuration error to stop
                    # start-up with, not an outage to wait out as "unreachable" while logouts go
                    # nowhere (an outside probe: both services started ready). Later, a password
                    # rotated under a running replica is retried like any failure.
                    raise BusRefused(
                        f"Redis refused the credentials ({exc}): check REDIS_URL's user "
                        "and REDIS_PASSWORD"
                    ) from None
                failures += 1
                log.warning("redis bus cannot connect", extra={"link": self.key, "error": str(exc)})
                self.down = True
                self.first_attempt_done.set()
                bus._lost()
                await bus._lost_track()
            except ResponseError as exc:
                if bus._started:
                    raise
                # Redis answers and refuses what the URL asks for: a database it does not have,
                # or channels its ACL user may not subscribe to (Redis 7 gives a new user none).
                # A configuration error, like refused credentials; not a link stopped for good.
                raise BusRefused(
                    f"Redis refused to set up the connection REDIS_URL names ({exc}): check its "
                    f"database and {_ACL_HINT}"
                ) from None
            else:
                failures = 1
                self.connected, self.down = True, False
                self.first_attempt_done.set()
                bus._pulse()
                try:
                    await self._serve(pubsub)
                except _REDIS_DOWN as exc:
                    log.warning(
                        "redis bus connection lost", extra={"link": self.key, "error": str(exc)}
                    )
                finally:
                    self.connected, self.down = False, True
                    self.confirmed = set()
                    await _discard(pubsub)
                    await self.close()
                    if not bus._closing:
                        bus._lost()
                await bus._lost_track()
            if self.key != _BROADCAST and not self.topics():
                break
            await asyncio.sleep(bus._delay(failures))

    async def _connect(self) -> PubSub:
        """Open the subscriber connection and subscribe every topic before going live."""
        pubsub, self._client = await self.bus._open(self.key)
        try:
            await pubsub.connect()  # type: ignore[no-untyped-call]  # unannotated in redis-py
            self.confirmed = set()
            topics = self.topics()
            await _subscribe(pubsub, topics, per_slot=self.on_cluster)
            requested = _Requested(topics)
            while not topics <= self.confirmed:
                message = await pubsub.get_message(timeout=self.bus._socket_timeout)
                if message is None:
                    raise RedisTimeoutError("Redis did not confirm the subscriptions")
                if self._handle(message, requested):
                    raise _Moved("Redis unsubscribed a topic as it was subscribed: its slot moved")
        except BaseException:
            await _discard(pubsub)
            await self.close()
            raise
        return pubsub

    async def _serve(self, pubsub: PubSub) -> None:
        """Read until the connection fails; a silent peer is detected by unanswered PINGs."""
        requested = _Requested(self.confirmed)
        syncer = asyncio.create_task(self._sync(pubsub, requested), name="redis-bus-sync")
        loop = asyncio.get_running_loop()
        interval = self.bus._ping_interval
        last_seen = now = loop.time()
        moved_at: float | None = None
        try:
            while not self.bus._closing:
                # Topics Redis dropped (their slots moved) come one message each, thousands at
                # once when a master hands all its slots over (a manual failover): they are
                # routed again once, MOVED_SETTLE after the first.
                wait = interval if moved_at is None else max(0.0, moved_at + MOVED_SETTLE - now)
                message = await pubsub.get_message(timeout=wait)
                now = loop.time()
                if message is not None:
                    last_seen = now
                    if self._handle(message, requested) and moved_at is None:
                        moved_at = now
                if moved_at is not None:
                    if now >= moved_at + MOVED_SETTLE:
                        # Only those topics left this master: they follow their slots to their
                        # new owners' links, and this link's other topics stay as they are.
                        # What was published to them meanwhile is missed: the reconnect
                        # listeners run once they are subscribed again, as after any loss.
                        moved_at = None
                        self.bus._lost()
                        await self.bus._lost_track()
                        if not self.topics():
                            return  # this master owns none of them any more
                elif message is None:
                    if now - last_seen > 2 * interval:
                        raise RedisTimeoutError("Redis stopped answering PING")
                    await pubsub.ping()
                if syncer.done():
                    syncer.result()
        finally:
            syncer.cancel()
            await asyncio.wait([syncer])

    async def _sync(self, pubsub: PubSub, requested: _Requested) -> None:
        """Bring Redis to the wanted topic set; the only writer of (S)SUBSCRIBE and
        (S)UNSUBSCRIBE. ``requested`` is shared with the reader, to tell an unsubscription it
        asked for from one Redis made (a Cluster slot that moved)."""
        self.wanted_changed.set()
        while True:
            await self.wanted_changed.wait()
            self.wanted_changed.clear()
            wanted = self.topics()
            added, removed = wanted - requested.topics, requested.topics - wanted
            requested.topics = wanted
            requested.leaving.update(removed)
            # Unconfirmed from the moment the unsubscription leaves: a topic taken again before
            # Redis confirms it would otherwise count as synced while Redis has dropped it, and
            # a subscriber told so missed what was published until the new SSUBSCRIBE arrived.
            self.confirmed -= removed
            await _subscribe(pubsub, added, per_slot=self.on_cluster)
            await _unsubscribe(pubsub, removed, per_slot=self.on_cluster)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # redis-py swallowed the cancel (a stop at shutdown unsubscribes everything):
                # waiting again would leave the link, and the process, hanging on close.
                raise asyncio.CancelledError

    def _handle(self, message: dict[str, Any], requested: _Requested) -> bool:
        """Take one message; True when Redis dropped a topic this link still carries (its
        Cluster slot moved to another master: a resharding), which must then be routed again.
        Dropping the whole link instead cut every other topic of the master for a reconnection,
        and their subscribers were closed 1012 ``missed_messages`` (an outside probe: five of
        five sockets of a channel whose slot never moved)."""
        kind = message["type"]
        if kind in ("message", "smessage"):
            self.bus._dispatch(message["channel"], message["data"])
        elif kind in ("subscribe", "ssubscribe"):
            # A subscription whose topic was dropped again after it left is not what Redis has
            # now: the later unsubscription's reply is still to come (and the re-subscription,
            # if taken a third time, is to be confirmed after it).
            if not requested.leaving[message["channel"]]:
                self.confirmed.add(message["channel"])
            self.bus._pulse()
        elif kind in ("unsubscribe", "sunsubscribe"):
            topic = message["channel"]
            moved = False
            if requested.leaving[topic] > 0:
                requested.leaving[topic] -= 1
            elif topic in requested.topics:
                log.info("redis bus topic moved", extra={"link": self.key, "topic": topic})
                requested.topics.discard(topic)
                moved = True
            self.confirmed.discard(topic)
            self.bus._pulse()
            return moved
        return False


class _Requested:
    """What a link asked Redis for: the topics it subscribed, and how many unsubscriptions of
    each are still to be confirmed (a topic dropped and taken again gets its unsubscription
    confirmed after the new subscription was sent)."""

    def __init__(self, topics: Iterable[str]) -> None:
        self.topics = set(topics)
        self.leaving: Counter[str] = Counter()


async def _subscribe(pubsub: PubSub, topics: set[str], *, per_slot: bool) -> None:
    """SUBSCRIBE the broadcast topics, SSUBSCRIBE the sharded ones (on a Cluster one command per
    hash slot: it refuses one that spans slots)."""
    broadcast = [topic for topic in topics if not is_sharded(topic)]
    if broadcast:
        await pubsub.subscribe(*broadcast)
    for group in _groups((topic for topic in topics if is_sharded(topic)), per_slot):
        await pubsub.ssubscribe(*group)


async def _unsubscribe(pubsub: PubSub, topics: set[str], *, per_slot: bool) -> None:
    broadcast = [topic for topic in topics if not is_sharded(topic)]
    if broadcast:
        await pubsub.unsubscribe(*broadcast)
    for group in _groups((topic for topic in topics if is_sharded(topic)), per_slot):
        await pubsub.sunsubscribe(*group)


def _groups(topics: Iterable[str], per_slot: bool) -> list[list[str]]:
    if not per_slot:
        return [group] if (group := list(topics)) else []
    groups: dict[int, list[str]] = defaultdict(list)
    for topic in topics:
        groups[key_slot(topic.encode())].append(topic)
    return list(groups.values())


def _ignored(topic: str, payload: str) -> None:
    """The handler of a probe topic (``check_subscriptions``): nothing is published there."""


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
