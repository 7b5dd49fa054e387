"""The server API across replicas: one command to every replica, their answers gathered.

A call (``POST /v1/disconnect``, ``GET /v1/channels``...) becomes one :class:`commands.Request` on
the bus's control topic. Every replica, the asker included, carries it out on its own sockets and
answers on the asker's reply topic; the asker waits for an answer from every replica the registry
(:class:`Replicas`) lists as live, or for the deadline, and merges them. Nothing is kept in Redis per
socket or per subscription, so the API costs the hot path nothing.

Consistency: each replica's share is exact at the moment it acts. A replica that does not answer by
the deadline (it died and the registry has not yet dropped it, or it is cut off from Redis) is left
out, and the answer says ``complete: false``. Embedded (one process, the in-process bus) the
registry is this replica alone and every answer is complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from shared.bus import BusUnavailable, EventBus, Unsubscribe
from ws_service.domain.clock import Clock, LoopClock
from ws_service.domain.commands import (
    CONTROL_TOPIC,
    REPLY_TOPIC_PREFIX,
    Command,
    CountConnections,
    DisconnectUser,
    ListChannels,
    Reply,
    Request,
    SubscribeUser,
    UnsubscribeUser,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)

__all__ = [
    "Channels",
    "ControlPlane",
    "Counted",
    "Executor",
    "Gathered",
    "LocalReplicas",
    "Replicas",
    "Sessions",
]

log = logging.getLogger(__name__)


class Replicas(Protocol):
    """Which replicas are alive, so that the asker knows whose answers to wait for. Redis
    failures are raised as ``BusUnavailable``."""

    async def join(self, replica: str) -> None:
        """Register ``replica`` or extend its registration by one lifetime."""

    async def leave(self, replica: str) -> None: ...

    async def live(self) -> frozenset[str]: ...


class LocalReplicas:
    """The embedded registry: the replicas of this process (one, in practice)."""

    def __init__(self) -> None:
        self._replicas: set[str] = set()

    async def join(self, replica: str) -> None:
        self._replicas.add(replica)

    async def leave(self, replica: str) -> None:
        self._replicas.discard(replica)

    async def live(self) -> frozenset[str]:
        return frozenset(self._replicas)


class Executor(Protocol):
    """What carries a command out on one replica's sockets (the ``Gateway``)."""

    @property
    def replica(self) -> str: ...

    async def execute(self, command: Command) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Gathered:
    results: list[dict[str, Any]]
    complete: bool
    """Whether every live replica answered before the deadline."""


class ControlPlane:
    def __init__(
        self,
        bus: EventBus,
        replicas: Replicas,
        executor: Executor,
        *,
        timeout: float = 2.0,
        clock: Clock | None = None,
    ) -> None:
        self._bus = bus
        self._clock: Clock = clock or LoopClock()
        self._replicas = replicas
        self._executor = executor
        self._timeout = timeout
        self._reply_topic = REPLY_TOPIC_PREFIX + executor.replica
        self._waiting: dict[str, _Gathering] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsubscribe: list[Unsubscribe] = []

    async def start(self) -> None:
        """Listen for commands and answers, then register (so no one waits for a replica that
        cannot hear yet)."""
        self._unsubscribe = [
            self._bus.subscribe(CONTROL_TOPIC, self._on_request),
            self._bus.subscribe(self._reply_topic, self._on_reply),
        ]
        await self.register()

    async def register(self) -> None:
        """Join the registry (at start, on every refresh and after a bus reconnection)."""
        try:
            await self._replicas.join(self._executor.replica)
        except BusUnavailable as exc:
            log.warning("replica not registered: redis unreachable", extra={"error": str(exc)})

    async def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        try:
            await self._replicas.leave(self._executor.replica)
        except BusUnavailable:
            log.warning("replica not unregistered: its registration lapses by itself")
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self._timeout)

    # -- the asking side -------------------------------------------------------------------

    async def count(self, command: DisconnectUser | UnsubscribeUser | SubscribeUser) -> Counted:
        """How many sockets, on every replica together, the command acted on."""
        gathered = await self.gather(command)
        total = sum(_int(result.get("count")) for result in gathered.results)
        return Counted(total, gathered.complete)

    async def connections(self, user: str) -> Sessions:
        gathered = await self.gather(CountConnections(user))
        sessions: Counter[str] = Counter()
        for result in gathered.results:
            found = result.get("sessions")
            if isinstance(found, dict):
                for sid, count in found.items():
                    sessions[sid] += _int(count)
        return Sessions(dict(sorted(sessions.items())), gathered.complete)

    async def channels(self, prefix: str, after: str, limit: int) -> Channels:
        """One page of the active channels in name order. Each replica sends its own first
        ``limit`` names after ``after``; any name among the first ``limit`` of the union is among
        the first ``limit`` of every replica that has it, so the merge is exact."""
        gathered = await self.gather(ListChannels(prefix, after, limit))
        counts: Counter[str] = Counter()
        listed = [_list(result.get("channels")) for result in gathered.results]
        for items in listed:
            for item in items:
                if isinstance(item, list) and len(item) == 2 and isinstance(item[0], str):
                    counts[item[0]] += _int(item[1])
        names = sorted(counts)[:limit]
        more = len(counts) > limit or any(len(items) >= limit for items in listed)
        page = [(name, counts[name]) for name in names]
        return Channels(page, names[-1] if more and names else None, gathered.complete)

    async def gather(self, command: Command) -> Gathered:
        """Send ``command`` to every replica and collect their answers until each live one has
        answered or the deadline passed. Raises ``BusUnavailable`` when the command could not be
        sent (Redis down): then no replica acted, not even this one."""
        request = Request(secrets.token_hex(8), self._reply_topic, command)
        gathering = _Gathering(await self._replicas.live() | {self._executor.replica})
        self._waiting[request.id] = gathering
        try:
            if self._bus.connected:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._bus.wait_synced(), self._timeout)
            await self._bus.publish(CONTROL_TOPIC, encode_request(request))
            deadline = self._clock.call_at(
                self._clock.monotonic() + self._timeout, gathering.done.set
            )
            await gathering.done.wait()
            deadline.cancel()
            if not gathering.complete:
                missing = sorted(gathering.expected - set(gathering.results))
                log.warning(
                    "replicas did not answer in time",
                    extra={"command": command.type, "missing": missing},
                )
        finally:
            del self._waiting[request.id]
        return Gathered(list(gathering.results.values()), gathering.complete)

    def _on_reply(self, topic: str, payload: str) -> None:
        try:
            reply = decode_reply(payload)
        except ValueError as exc:
            log.warning("ignoring a malformed control reply", extra={"reason": str(exc)})
            return
        gathering = self._waiting.get(reply.id)
        if gathering is not None:
            gathering.add(reply)

    # -- the answering side ----------------------------------------------------------------

    def _on_request(self, topic: str, payload: str) -> None:
        try:
            request = decode_request(payload)
        except ValueError as exc:
            log.warning("ignoring a malformed control command", extra={"reason": str(exc)})
            return
        if request.reply_to.startswith(REPLY_TOPIC_PREFIX):
            self._spawn(self._answer(request))

    async def _answer(self, request: Request) -> None:
        try:
            result = await self._executor.execute(request.command)
        except Exception:
            log.exception("control command failed", extra={"command": request.command.type})
            return
        reply = Reply(request.id, self._executor.replica, result)
        try:
            await self._bus.publish(request.reply_to, encode_reply(reply))
        except BusUnavailable as exc:
            log.warning("control answer lost: redis unreachable", extra={"error": str(exc)})

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


@dataclass(frozen=True, slots=True)
class Counted:
    count: int
    complete: bool


@dataclass(frozen=True, slots=True)
class Sessions:
    sessions: dict[str, int]
    """Sockets per session id."""
    complete: bool


@dataclass(frozen=True, slots=True)
class Channels:
    channels: list[tuple[str, int]]
    """(name, subscribed sockets) in name order."""
    cursor: str | None
    """Where the next page starts; None on the last page."""
    complete: bool


class _Gathering:
    def __init__(self, expected: frozenset[str]) -> None:
        self.expected = expected
        self.results: dict[str, dict[str, Any]] = {}
        self.done = asyncio.Event()

    @property
    def complete(self) -> bool:
        return self.expected <= set(self.results)

    def add(self, reply: Reply) -> None:
        self.results.setdefault(reply.replica, reply.result)
        if self.complete:
            self.done.set()


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _list(value: object) -> list[Any]:
    """A replica's list, or none: a reply on the shared bus is anyone's who can publish there."""
    return value if isinstance(value, list) else []
