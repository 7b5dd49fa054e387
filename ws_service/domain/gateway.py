"""The gateway's domain services in one object: verification, revocations, channels, the index of
authenticated connections by user. One per app; aiohttp stays in the handlers."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections import Counter
from typing import Any

from realtime_gateway_protocol.access_token import Claims
from realtime_gateway_protocol.events import SessionRevoked, UserRevoked, decode_event
from realtime_gateway_protocol.key_events import KeyWithdrawn, decode_key_event
from shared.addresses import counted_as
from shared.bus import BusUnavailable, RevocationLedger
from shared.dpop import ProofError, ProofVerifier
from shared.jsonlog import Throttled
from shared.once import LocalUsedOnce, UsedOnce
from ws_service.domain import errors
from ws_service.domain.clock import Clock, LoopClock
from ws_service.domain.commands import (
    Command,
    CountConnections,
    DisconnectUser,
    ListChannels,
    UnsubscribeUser,
)
from ws_service.domain.connection import Connection, Context, Peer
from ws_service.domain.deadlines import Deadlines
from ws_service.domain.hub import Hub
from ws_service.domain.limits import Limits
from ws_service.domain.proxy import ProxyGate
from ws_service.domain.revocations import RevocationRegistry
from ws_service.domain.telemetry import GatewayMetrics
from ws_service.domain.user_slots import UserSlots
from ws_service.domain.verify import DpopRules, TokenVerifier

__all__ = ["RECONCILE_BATCH", "Gateway"]

RECONCILE_BATCH = 500
"""Live sockets checked per ledger round trip when reconciling."""
KEY_EVENT_SETTLE = 1.0
"""Seconds after a key announcement before the key set is fetched again. Every auth replica
reloads its keys on the same announcement; a fetch at once could reach one that had not yet
(1 ms apart in an outside probe), and the refetch an unknown kid may cause is limited to one per
10 s (a forged kid must not buy fetches), so new tokens were refused for up to 10 s."""
RECONNECT_REFETCHES = (5.0, 35.0)
"""Seconds after a reconnection at which the key set is fetched again, after the fetch at once:
the auth replicas reload their keys when they reconnect too, or at their timer's next reload
(30 s at most), and a fetch from one that has not yet still lists a key withdrawn meanwhile."""

log = logging.getLogger(__name__)


class Gateway:
    def __init__(
        self,
        limits: Limits,
        verifier: TokenVerifier,
        revocations: RevocationRegistry,
        hub: Hub,
        metrics: GatewayMetrics,
        *,
        ledger: RevocationLedger | None = None,
        slots: UserSlots | None = None,
        clock: Clock | None = None,
        proxies: ProxyGate | None = None,
        reconcile_batch: int = RECONCILE_BATCH,
        dpop: DpopRules | None = None,
        used: UsedOnce | None = None,
    ) -> None:
        """``used`` spends DPoP proofs' ``jti`` (Redis, shared by the replicas, when scaled
        out)."""
        self.limits = limits
        self.verifier = verifier
        self.revocations = revocations
        self.hub = hub
        self.metrics = metrics
        self.ledger = ledger
        self.slots = slots
        self._reconcile_batch = reconcile_batch
        # A tuple per user, not a set: most users hold one socket (a 1-tuple is 48 bytes, an empty
        # set 216), the per-user limit keeps tuples short, and on_revocation iterates a snapshot.
        self._users: dict[str, tuple[Connection, ...]] = {}
        # Indexed, their slot still being asked for: not held yet, so neither refreshed nor
        # restored (a restore would write the slot past the cap, and the acquisition, finding it
        # there, would take it).
        self._acquiring: set[Connection] = set()
        # Keyed by counted_as: an IPv6 address by its /64, whose 2^64 addresses counted apart
        # were as many fresh caps.
        self._waiting: Counter[str] = Counter()
        self._replica = secrets.token_hex(6)
        self._serials = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._refetches: set[asyncio.Task[None]] = set()
        # Met by every handshake while Redis is down: a line per interval, not per handshake.
        self._ledger_down = Throttled(log, "revocation ledger unreachable; tokens accepted")
        self._slots_down = Throttled(log, "connection slots unreachable; sockets admitted")
        clock = clock or LoopClock()
        self.dpop = dpop or DpopRules()
        self._proofs = ProofVerifier(used or LocalUsedOnce(clock.time), clock.time)
        self.deadlines = Deadlines(clock)
        self.context = Context(
            limits=limits,
            metrics=metrics,
            hub=hub,
            namespaces=hub.namespaces,
            admission=self,
            deadlines=self.deadlines,
            clock=clock,
            events=hub.events,
            proxies=proxies,
        )

    def may_wait(self, remote: str) -> bool:
        """Whether ``remote`` may open one more socket that still has to authenticate."""
        return self._waiting[counted_as(remote)] < self.limits.max_unauthenticated_per_address

    def connect(self, peer: Peer, remote: str, opened: float | None = None) -> Connection:
        """A new socket after the upgrade; its auth deadline starts now. ``opened``: when its
        upgrade request arrived (monotonic), the start of its handshake."""
        self._waiting[counted_as(remote)] += 1
        self.metrics.awaiting_auth.inc()
        return Connection(self.context, peer, remote, next(self._serials), opened)

    async def authenticate(self, token: str, proof: str | None = None) -> Claims:
        """Verify ``token`` (the in-memory registry included) and, when it is DPoP-bound, the
        ``proof`` of its key; then ask the ledger, in one round trip, about a revocation whose
        bus event this replica may have missed.

        An unreachable ledger is not a refusal: while Redis is down local traffic keeps flowing,
        and the reconciliation after the reconnection closes what slipped through. While the bus
        says Redis is unreachable the ledger is not asked at all: a Redis that hangs (rather than
        refusing connections) cost every handshake its timeouts and retries, seconds each, for an
        answer known in advance.
        """
        claims = await self.verifier.verify(token)
        if claims.jkt is not None:
            await self._prove(claims.jkt, token, proof)
        return await self.confirm(claims)

    async def _prove(self, jkt: str, token: str, proof: str | None) -> None:
        """RFC 9449 section 7 at the socket: a proof for ``GET`` of the public WebSocket URL, of
        this token (``ath``), fresh, never seen before, made with the token's key."""
        if proof is None:
            raise errors.InvalidProof()
        try:
            await self._proofs.verify(
                proof, method="GET", url=self.dpop.url, access_token=token, jkt=jkt
            )
        except ProofError as exc:
            raise errors.InvalidProof(exc.description) from None
        except BusUnavailable:
            raise errors.KeysUnavailable(
                "DPoP proofs cannot be checked right now; try again"
            ) from None

    async def confirm(self, claims: Claims) -> Claims:
        """The ledger half of ``authenticate``, for claims verified another way (a ticket). The
        local checks run again after the round trip: an event may have arrived meanwhile. With
        ``WS_DPOP=required`` a token that is not DPoP-bound is refused here, whatever way it
        came."""
        if self.dpop.required and claims.jkt is None:
            raise errors.InvalidToken("this gateway accepts DPoP-bound tokens only")
        if self.ledger is None:
            return claims
        try:
            if not self.hub.connected:  # known down: fail open now, not after the timeouts
                raise BusUnavailable("the event bus is disconnected")
            [revoked] = await self.ledger.revoked([claims.ref])
        except BusUnavailable as exc:
            self.metrics.ledger_checks.labels("unavailable").inc()
            self._ledger_down.warning(error=str(exc))
        else:
            self.metrics.ledger_checks.labels("revoked" if revoked else "ok").inc()
            if revoked:
                self._remember(claims)
                raise errors.SessionRevoked(subject=claims.sub)
        return self.verifier.checked(claims)

    async def admit(self, conn: Connection, claims: Claims) -> None:
        """Index a freshly authenticated connection under its user, within the per-user limit:
        this replica's count, then (scaled out) the count across every replica. A connection
        that started closing meanwhile is left out, as if it never authenticated."""
        sub = claims.sub
        conns = self._users.get(sub, ())
        if len(conns) >= self.limits.max_connections_per_user:
            raise errors.TooManyConnections(subject=sub)
        # Indexed while the shared count answers, so that this replica's count stays exact.
        self._users[sub] = (*conns, conn)
        self._acquiring.add(conn)
        try:
            taken = await self._acquire(sub, conn)
        except BaseException:
            self._unindex(sub, conn)
            self._release(sub, conn)
            raise
        finally:
            self._acquiring.discard(conn)
        if not taken or conn.closing:
            self._unindex(sub, conn)
            if not taken:
                raise errors.TooManyConnections(subject=sub)
            self._release(sub, conn)
            return
        try:  # a revocation or a key withdrawal heard while the slot was asked for
            self.verifier.checked(claims)
        except errors.AuthError:  # it skipped this socket: its claims were not set yet
            self._unindex(sub, conn)
            self._release(sub, conn)
            raise
        self._stop_waiting(conn)
        self.metrics.awaiting_auth.dec()
        self.metrics.authenticated.inc()

    async def _acquire(self, sub: str, conn: Connection) -> bool:
        """The slot across replicas. An unreachable Redis is not a refusal (as for the ledger):
        this process's own count still holds, and the slot is restored when the bus reconnects."""
        if self.slots is None:
            return True
        checks = self.metrics.user_limit_checks
        try:
            if not self.hub.connected:  # known down: fail open now, not after the timeouts
                raise BusUnavailable("the event bus is disconnected")
            taken = await self.slots.acquire(
                sub, self._slot(conn), self.limits.max_connections_per_user
            )
        except BusUnavailable as exc:
            checks.labels("unavailable").inc()
            self._slots_down.warning(error=str(exc))
            return True
        checks.labels("ok" if taken else "full").inc()
        return taken

    def forget(self, conn: Connection) -> None:
        if conn.claims is None:
            self._stop_waiting(conn)
            self.metrics.awaiting_auth.dec()
            return
        self.metrics.authenticated.dec()
        self._unindex(conn.claims.sub, conn)
        self._release(conn.claims.sub, conn)

    def _unindex(self, sub: str, conn: Connection) -> None:
        rest = tuple(other for other in self._users.get(sub, ()) if other is not conn)
        if rest:
            self._users[sub] = rest
        else:
            self._users.pop(sub, None)

    def _slot(self, conn: Connection) -> str:
        return f"{self._replica}:{conn.serial}"

    def _release(self, sub: str, conn: Connection) -> None:
        """Give the slot back in the background; one Redis cannot take stays until it lapses."""
        if self.slots is None:
            return
        task = asyncio.get_running_loop().create_task(self._give_back(self.slots, sub, conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _give_back(self, slots: UserSlots, sub: str, conn: Connection) -> None:
        try:
            await slots.release(sub, self._slot(conn))
        except BusUnavailable as exc:
            log.warning(
                "connection slot not released: redis unreachable", extra={"error": str(exc)}
            )

    def _held(self) -> list[tuple[str, list[str]]]:
        held = (
            (sub, [self._slot(conn) for conn in conns if conn not in self._acquiring])
            for sub, conns in self._users.items()
        )
        return [(sub, slots) for sub, slots in held if slots]

    async def refresh_slots(self) -> None:
        """Keep this replica's connection slots from lapsing (with the presence refresh). Slots
        that lapsed anyway (this replica stalled past their life without its bus reconnecting)
        are held again, as after a reconnection: their sockets are open."""
        if self.slots is not None:
            gone = await self.slots.refresh(self._held())
            if gone:
                await self.restore_slots(frozenset(gone))

    async def restore_slots(self, users: frozenset[str] | None = None) -> None:
        """Bus reconnect listener: Redis may have lost this replica's slots, or never seen the
        ones admitted while it was unreachable. ``users``: only theirs (a refresh found them
        lapsed)."""
        if self.slots is None:
            return
        held = self._held()
        if users is not None:
            held = [(sub, slots) for sub, slots in held if sub in users]
        try:
            await self.slots.restore(held)
        except BusUnavailable as exc:
            log.warning(
                "connection slots not restored: redis unreachable", extra={"error": str(exc)}
            )

    async def close(self) -> None:
        """Cancel the proxy calls in flight; let pending slot releases finish (briefly)."""
        if self.context.proxies is not None:
            await self.context.proxies.close()
        for task in self._refetches:
            task.cancel()
        if self._tasks or self._refetches:
            await asyncio.wait({*self._tasks, *self._refetches}, timeout=self.limits.sync_timeout)

    def _stop_waiting(self, conn: Connection) -> None:
        remote = counted_as(conn.remote or "")
        self._waiting[remote] -= 1
        if self._waiting[remote] <= 0:
            del self._waiting[remote]

    @property
    def replica(self) -> str:
        """This gateway's id, unique across replicas and workers."""
        return self._replica

    async def execute(self, command: Command) -> dict[str, Any]:
        """Carry out a server API command on this replica's own authenticated sockets; the
        result is this replica's share of the answer (see ``commands``)."""
        if isinstance(command, ListChannels):
            found = self.hub.channels(command.prefix, command.after, command.limit)
            return {"channels": [[name, count] for name, count in found]}
        conns = [conn for conn in self._users.get(command.user, ()) if conn.live]
        if isinstance(command, CountConnections):
            sessions = Counter(conn.claims.sid for conn in conns if conn.claims is not None)
            return {"sessions": dict(sessions)}
        proxies = self.context.proxies
        if isinstance(command, DisconnectUser):
            if proxies is not None:  # the sockets it closes reconnect: ask the app again
                proxies.forget(command.user)
            count = sum(
                conn.disconnect()
                for conn in conns
                if command.session is None
                or (conn.claims is not None and conn.claims.sid == command.session)
            )
        elif isinstance(command, UnsubscribeUser):
            if proxies is not None:  # a remembered allow would let the user straight back in
                proxies.forget(command.user, command.channel)
            count = sum(conn.unsubscribe_by_server(command.channel) for conn in conns)
        else:
            count = 0
            if not self.hub.namespaces.of(command.channel).server_may_subscribe(
                command.user, command.channel
            ):  # the API refuses it first; a replica never acts on one either
                conns = []
            for conn in conns:
                count += await conn.subscribe_by_server(command.channel)
        return {"count": count}

    def on_revocation(self, topic: str, payload: str) -> None:
        """Bus handler: remember the revocation and close every socket it covers."""
        try:
            event = decode_event(payload)
        except ValueError:
            log.warning("ignoring malformed revocation event", extra={"topic": topic})
            return
        self.revocations.apply(event)
        for conn in self._users.get(event.sub, ()):
            claims = conn.claims
            if claims is None or conn.closing:
                continue
            if (isinstance(event, SessionRevoked) and claims.sid == event.sid) or (
                isinstance(event, UserRevoked) and claims.iat < event.issued_before
            ):
                conn.revoke(event.type)

    def on_key_event(self, topic: str, payload: str) -> None:
        """Bus handler for ``auth.keys``: a withdrawn key leaves the key cache at once (which
        reports it to :meth:`keys_dropped`); after a rotation or a withdrawal (which rotates)
        the key set is fetched again once the auth replicas have reloaded theirs, so the new
        key's tokens verify from the first (:data:`KEY_EVENT_SETTLE`)."""
        try:
            event = decode_key_event(payload)
        except ValueError as exc:
            log.warning("ignoring a malformed key announcement", extra={"reason": str(exc)})
            return
        if isinstance(event, KeyWithdrawn):
            self.verifier.keys.withdraw(event.kid)
        self._refetch_keys_at((KEY_EVENT_SETTLE,), "key announcement")

    def keys_dropped(self, kids: frozenset[str]) -> None:
        """Keys left the key cache (withdrawn, or gone from a fresh key set): every live socket
        whose token one of them signed must renew within ``key_withdrawal_grace`` seconds."""
        grace = self.limits.key_withdrawal_grace
        told = 0
        for conns in tuple(self._users.values()):
            for conn in conns:
                if conn.claims is not None and conn.claims.kid in kids and not conn.closing:
                    conn.key_withdrawn(grace)
                    told += 1
        if told:
            log.warning(
                "sockets of a dropped signing key must renew",
                extra={"kids": sorted(kids), "sockets": told, "grace": grace},
            )

    async def refresh_keys(self) -> None:
        """Bus reconnect listener: a withdrawal announced while this replica was cut off from
        Redis was missed, but the issuer's key set no longer lists the key; fetch it now rather
        than at its TTL, so the key leaves the cache and its sockets are told, and again at
        :data:`RECONNECT_REFETCHES`: the auth replicas missed the announcement too, and one
        that has not reloaded yet still lists the key (accepted for minutes: an outside probe)."""
        await self.refetch_keys("reconnect")
        self._refetch_keys_at(RECONNECT_REFETCHES, "reconnect")

    def _refetch_keys_at(self, delays: tuple[float, ...], reason: str) -> None:
        async def refetch() -> None:
            waited = 0.0
            for delay in delays:
                await asyncio.sleep(delay - waited)
                waited = delay
                await self.refetch_keys(reason)

        task = asyncio.get_running_loop().create_task(refetch())
        self._refetches.add(task)
        task.add_done_callback(self._refetches.discard)

    async def refetch_keys(self, reason: str) -> None:
        """Fetch the issuer's key set now (a failure is logged; the cache's TTL retries)."""
        try:
            await self.verifier.keys.refresh()
        except errors.KeysUnavailable:
            log.warning("key set refetch failed; its TTL retries", extra={"after": reason})

    def on_ledger_restored(self, topic: str, payload: str) -> None:
        """Bus handler for ``auth.ledger_restored``: Redis came back without the revocation
        records and auth_service wrote them back; the reconciliation that ran at the reconnection
        read the empty ledger (and sockets may have been admitted since), so it runs again."""
        task = asyncio.get_running_loop().create_task(self.reconcile())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reconcile(self) -> None:
        """Bus reconnect listener: close the live sockets whose revocation event was published
        while this replica was cut off from Redis, as that event would have."""
        if self.ledger is None:
            return
        live = [
            (conn, conn.claims)
            for conns in self._users.values()
            for conn in conns
            if conn.claims is not None and not conn.closing
        ]
        closed = 0
        for start in range(0, len(live), self._reconcile_batch):
            batch = live[start : start + self._reconcile_batch]
            try:
                flags = await self.ledger.revoked([claims.ref for _, claims in batch])
            except BusUnavailable as exc:
                self.metrics.reconciliations.labels("unavailable").inc()
                log.warning("reconciliation stopped: ledger unreachable", extra={"error": str(exc)})
                return
            for (conn, claims), revoked in zip(batch, flags, strict=True):
                if revoked:
                    self._remember(claims)
                    if not conn.closing:
                        conn.revoke(errors.SessionRevoked.code)
                        closed += 1
        self.metrics.reconciliations.labels("ok").inc()
        log.info("reconciled live sockets", extra={"checked": len(live), "revoked": closed})

    def _remember(self, claims: Claims) -> None:
        """Keep a ledger hit locally, so that this token's session is refused without a round trip.

        The ledger does not say whether the session or the whole user was revoked; the session
        is the part known for certain, and other sessions are still checked against the ledger.
        A token without a session (a trusted issuer's) leaves nothing to remember: an empty
        ``sid`` would cover every such token.
        """
        if claims.sid:
            self.revocations.apply(SessionRevoked(sid=claims.sid, sub=claims.sub, until=claims.exp))
