"""Writes to Redis that must not be applied twice, and that say whether they may have been.

redis-py retries a command after a timeout or a broken connection (its ``Retry`` covers both by
default, and ``retry_on_error`` only adds to that list), so a write whose reply was lost runs a
second time: a message published twice. Here a write runs on one pooled connection at a time and
its outcome is tracked: a failure before the command left is :class:`BusUnavailable` (nothing
happened, retrying is always safe); a failure after it is :class:`BusOutcomeUnknown`. Only a write
that is idempotent (a script that recognises its own retry) is sent again after that.

On a Redis Cluster the write goes to the master of ``key``'s slot. A refusal that proves nothing
ran (``MOVED`` after a failover or a resharding, ``TRYAGAIN``, ``CLUSTERDOWN`` while the cluster
elects a new master, ``READONLY`` from a demoted master) is retried like a write that never left,
after the client has asked the cluster again who owns what. While a slot migrates (a resharding:
``ASK`` once a script's keys have left, ``TRYAGAIN`` while they are split between the two nodes)
the write is retried until the slot has moved, for up to ``MIGRATION_WAIT``: given up after a few
tries, the caller took Redis for unreachable, and a channel's publishes were delivered to the
publisher's replica only, kept in no history, for the whole migration (an outside probe).

Replication is asynchronous: a master that dies may take its last writes with it, and the replica
promoted in its place never had them. A write that must survive a failover (a revocation record, a
history message before it is delivered) asks for ``WAIT``: on the same connection, until one
replica has it, at most ``REPLICA_WAIT_MS``. It waits only when the master has a replica to wait
for, which the script itself reports (``replicas_of``), so a lone server pays nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MasterDownError,
    MovedError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from shared.bus import BusOutcomeUnknown, BusUnavailable
from shared.redis.connect import RedisClient, refresh_topology

__all__ = ["REPLICAS_LUA", "REPLICA_WAIT_MS", "Replicas", "WriteScript", "write"]

log = logging.getLogger(__name__)

_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
_MIGRATING = (AskError, TryAgainError)
"""Refusals of a slot being migrated (``MovedError`` is an ``AskError``: a slot that moved)."""
_NOT_RUN = (*_MIGRATING, ClusterDownError, MasterDownError, ReadOnlyError)
"""Refusals that prove the command did not run: retrying is as safe as for one never sent."""
_BACKOFF = 0.02
"""Seconds before the first retry, doubling: a stale connection or a brief stall, not an outage."""

MIGRATION_WAIT = 2.0
"""Seconds a write refused by a migrating slot is retried for: the slot of a resharding moves
within milliseconds, unless it holds a large history."""
_MIGRATION_BACKOFF_CAP = 0.1

REPLICA_WAIT_MS = 200
"""How long a durable write waits for a replica: far above a healthy replica's lag (well under a
millisecond on a LAN), short enough that a sick replica slows writes down without stopping them."""

REPLICAS_LUA = """
local function replicas()
  local ok, info = pcall(redis.call, 'INFO', 'replication')
  if not ok then return 0 end
  return tonumber(string.match(info, 'connected_slaves:(%d+)') or '0')
end
"""
"""A Lua function for scripts that write durably: how many replicas this master has now (0 when
an ACL user may not run INFO: then nothing waits, as on a lone server)."""

Replicas = Callable[[Any], int]
"""Given a write's reply, how many replicas it must reach before it counts as done."""

_last_warning = 0.0


class _Pool(Protocol):
    async def get_connection(self) -> AbstractConnection: ...

    async def release(self, connection: AbstractConnection) -> None: ...


async def write(
    redis: RedisClient,
    *command: EncodableT,
    idempotent: bool,
    key: str | None = None,
    replicas: Replicas | None = None,
    attempts: int = 3,
) -> Any:
    """Run ``command`` and return Redis's reply; an error reply is raised as redis-py raises it.

    Up to ``attempts`` tries while the command could not be sent; after it was sent, more only
    when ``idempotent``. Raises :class:`BusOutcomeUnknown` when Redis may have applied it, else
    :class:`BusUnavailable`. ``key`` routes the write on a Cluster (None: any master).
    ``replicas`` makes the write durable: see the module's docstring."""
    maybe_applied = False
    error: Exception | None = None
    migrating_until: float | None = None
    attempt = 0
    pause = 0.0
    while attempt < attempts:
        if pause or attempt:
            await asyncio.sleep(pause or _BACKOFF * 2 ** (attempt - 1))
            pause = 0.0
        attempt += 1
        try:
            pool = await _pool_for(redis, key)
            conn = await pool.get_connection()
        except (*_DOWN, RedisClusterException) as exc:
            error = exc
            await _lost_track(redis)
            continue
        try:
            await conn.send_command(*command)
            reply = await conn.read_response()
            if replicas is not None:
                await _wait(conn, replicas(reply))
            return reply
        except _NOT_RUN as exc:
            error = exc
            await _lost_track(redis)
            if isinstance(exc, _MIGRATING) and not isinstance(exc, MovedError):
                now = time.monotonic()
                if migrating_until is None:
                    migrating_until = now + MIGRATION_WAIT
                if now < migrating_until:
                    # Not a try: the slot is moving, and the write waits until it has moved.
                    attempt = 0
                    pause = min(_MIGRATION_BACKOFF_CAP, migrating_until - now)
        except _DOWN as exc:
            error = exc
            maybe_applied = True
            await conn.disconnect()
            await _lost_track(redis)
            if not idempotent:
                break
        finally:
            await pool.release(conn)
    if maybe_applied:
        raise BusOutcomeUnknown(f"Redis did not confirm the write: {error}") from error
    raise BusUnavailable(f"Redis is unreachable: {error}") from error


async def _wait(conn: AbstractConnection, wanted: int) -> None:
    """``WAIT`` for ``wanted`` replicas (at most one: any in-sync replica may be promoted). A
    replica that does not answer in time is logged (once a minute) and the write goes on."""
    global _last_warning
    wanted = min(wanted, 1)
    if wanted < 1:
        return
    await conn.send_command("WAIT", wanted, REPLICA_WAIT_MS)
    acked = int(await conn.read_response())
    now = time.monotonic()
    if acked < wanted and now - _last_warning > 60:
        _last_warning = now
        log.warning(
            "a Redis replica did not acknowledge a write in time: a failover now could lose it",
            extra={"wait_ms": REPLICA_WAIT_MS},
        )


async def _pool_for(redis: RedisClient, key: str | None) -> _Pool:
    if not isinstance(redis, RedisCluster):
        return redis.connection_pool
    await redis.initialize()
    node = redis.get_node_from_key(key) if key is not None else redis.get_random_primary_node()
    if node is None:
        raise RedisClusterException(f"no master serves {key}")
    return _NodePool(node)


async def _lost_track(redis: RedisClient) -> None:
    """After a node failed or refused: ask the Cluster again who owns what (a failover moves
    slots to another node). A single server or Sentinel's pool finds the master by itself."""
    if isinstance(redis, RedisCluster):
        try:
            await refresh_topology(redis)
        except (*_DOWN, RedisClusterException) as exc:
            log.debug("cluster topology refresh failed", extra={"error": str(exc)})


class _NodePool:
    """One Cluster node's connections, handed out as a pool does: connected, and checked for a
    socket the node closed meanwhile (a killed node's), which is reopened before use."""

    def __init__(self, node: ClusterNode) -> None:
        self._node = node

    async def get_connection(self) -> AbstractConnection:
        conn = self._node.acquire_connection()
        try:
            await conn.connect()  # type: ignore[no-untyped-call]  # unannotated in redis-py
            if await conn.can_read():
                raise RedisConnectionError("the connection has unread data")
        except _DOWN:
            await conn.disconnect()
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
            except BaseException:
                self._node.release(conn)
                raise
        except BaseException:
            self._node.release(conn)
            raise
        return conn

    async def release(self, connection: AbstractConnection) -> None:
        self._node.release(connection)  # type: ignore[arg-type]


class WriteScript:
    """A Lua script run through :func:`write`: EVALSHA, then EVAL if Redis lost its script cache
    (a ``NOSCRIPT`` reply means nothing ran; a promoted replica starts with an empty cache). On a
    Cluster it runs on the master of its first key: every key a script touches shares one hash
    tag."""

    def __init__(self, source: str) -> None:
        self._source = source
        self._sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(
        self,
        redis: RedisClient,
        keys: Sequence[str],
        args: Sequence[EncodableT],
        *,
        idempotent: bool,
        replicas: Replicas | None = None,
    ) -> Any:
        key = keys[0] if keys else None
        try:
            return await write(
                redis,
                "EVALSHA", self._sha, len(keys), *keys, *args,
                idempotent=idempotent, key=key, replicas=replicas,
            )  # fmt: skip
        except NoScriptError:
            return await write(
                redis,
                "EVAL", self._source, len(keys), *keys, *args,
                idempotent=idempotent, key=key, replicas=replicas,
            )  # fmt: skip
