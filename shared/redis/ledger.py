"""The revocation ledger in Redis: one key per revoked session or user, expiring with the last
token it covers (``until``).

A record is written by a script that keeps the later cut-off and the later expiry, so writing it
again (a retry whose first try did run, or an older event arriving after a newer one) never lowers
what is recorded; that makes the write safe to retry after a timeout. The write waits for a
replica (``shared.redis.write``), so a logout whose record Redis confirmed survives a failover:
a replica that missed the announcement still finds the record on the promoted master.

Redis may lose the records (it keeps nothing on disk here: a restart comes back empty), and a ws
replica started since would then admit a logged-out session's access tokens until they expire.
auth_service keeps every revocation in force in its database too, and writes them all again when
the ``INTACT`` mark is gone (:meth:`RedisRevocationLedger.intact`).

Every record and the mark share one hash tag (``{gateway:revoked}``), so on a Cluster they live on
one shard, and a shard that loses its data loses the mark with the records. Spread over slots, a
shard that came back empty took its records but left the mark, kept on another shard, in place: the
logouts it held were never written again. The ledger's load sits on that one shard: the records are
small, only revocations in force are kept, and checks are batched: the handshakes that ask while
another check is out (or in the same loop iteration) share the next round trip (``shared.batch``),
one ``MGET``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from redis.exceptions import RedisError

from realtime_gateway_protocol.access_token import TokenRef
from realtime_gateway_protocol.events import RevocationEvent, SessionRevoked, record_key
from shared.batch import Batcher
from shared.bus import BusUnavailable
from shared.redis.connect import open_client
from shared.redis.write import REPLICAS_LUA, WriteScript

__all__ = ["INTACT", "PREFIX", "RedisRevocationLedger"]

PREFIX = "{gateway:revoked}"
INTACT = f"{PREFIX}:intact"
"""Set once every record auth_service keeps is written; gone with the records when Redis loses
them, which is how auth_service knows to write them again."""

# KEYS: the record. ARGV: the value (a user's cut-off, 1 for a session), seconds to keep it.
# Returns the replicas to wait for.
_RECORD = WriteScript(
    REPLICAS_LUA
    + """
local current = redis.call('GET', KEYS[1])
if current and tonumber(current) > tonumber(ARGV[1]) then
  return replicas()
end
local ttl = math.max(redis.call('TTL', KEYS[1]), tonumber(ARGV[2]))
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
return replicas()
"""
)


class RedisRevocationLedger:
    """Implements :class:`shared.bus.RevocationLedger`."""

    def __init__(
        self, url: str, *, timeout: float = 1.0, on_batch: Callable[[int], None] | None = None
    ) -> None:
        """``on_batch`` hears how many tokens each round trip of :meth:`revoked` checked."""
        # Reads retry a timeout or a stale connection (they are idempotent); the write retries
        # through shared.redis.write, its script being safe to run twice.
        self._redis = open_client(url, timeout=timeout, retries=2)
        self._checks: Batcher[TokenRef, bool] = Batcher(self._check, on_batch=on_batch)

    async def close(self) -> None:
        await self._checks.close()
        await self._redis.aclose()

    async def record(self, event: RevocationEvent, now: float | None = None) -> None:
        """Remember a revocation until ``event.until``; raises :class:`BusUnavailable` (or its
        ``BusOutcomeUnknown``, when Redis may have recorded it)."""
        ttl = max(1, int(event.until - (time.time() if now is None else now)) + 1)
        # A later logout-everywhere has a later cut-off and a later until: it supersedes.
        value = 1 if isinstance(event, SessionRevoked) else event.issued_before
        key = f"{PREFIX}:{record_key(event)}"
        try:
            await _RECORD(self._redis, [key], [value, ttl], idempotent=True, replicas=int)
        except RedisError as exc:
            raise BusUnavailable(f"revocation ledger unreachable: {exc}") from exc

    async def intact(self) -> bool:
        """Whether the records are still all here: False once Redis lost its data (a restart
        without persistence, a failover that lost writes, a flush), which drops the mark with
        them. auth_service then writes back what it keeps (:meth:`mark_intact` after)."""
        with _reachable():
            return bool(await self._redis.exists(INTACT))

    async def mark_intact(self) -> None:
        with _reachable():
            await self._redis.set(INTACT, "1")

    async def revoked(self, tokens: Sequence[TokenRef]) -> list[bool]:
        """For each token, whether the ledger says it is revoked: one round trip for these and
        every other token asked about meanwhile. A record written before the call is seen."""
        return await self._checks.run(tokens)

    async def _check(self, tokens: list[TokenRef]) -> list[bool]:
        keys: list[str] = []
        for token in tokens:
            keys += [f"{PREFIX}:sid:{token.sid}", f"{PREFIX}:user:{token.sub}"]
        with _reachable():
            values = await self._redis.mget(keys)  # one slot, so one command on a Cluster too
        result = []
        for i, token in enumerate(tokens):
            session, cutoff = values[2 * i], values[2 * i + 1]
            result.append(session is not None or (cutoff is not None and token.iat < int(cutoff)))
        return result


@contextmanager
def _reachable() -> Iterator[None]:
    """A read's failure (Redis down, a timeout, a dropped connection) as ``BusUnavailable``."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise BusUnavailable(f"revocation ledger unreachable: {exc}") from exc
