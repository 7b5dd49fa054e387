"""Who is in a channel: members with their connection counts, and join/leave once per user.

A user's second tab joining is not a join and the last tab leaving is the leave, so both backends
count connections per user and announce only the transitions between zero and one, on the bus
topic ``pres:{<channel>}`` (:func:`presence_topic`). In Redis each connection's entry expires
unless its replica refreshes it, so the users of a replica that died leave within the presence
TTL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from realtime_gateway_protocol.wire_json import dumps
from shared.bus import sharded_topic

__all__ = [
    "PRESENCE_TOPIC_PREFIX",
    "Member",
    "MemoryPresence",
    "Presence",
    "Transition",
    "member_frame",
    "members_of",
    "presence_topic",
]

PRESENCE_TOPIC_PREFIX = "pres:"


def presence_topic(channel: str) -> str:
    return sharded_topic(PRESENCE_TOPIC_PREFIX, channel)


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    username: str | None

    def as_json(self) -> str:
        return dumps({"id": self.id, "username": self.username})


Transition = Callable[[str, str, Member], None]
"""Told ``(kind, channel, member)`` for each ``join``/``leave`` a backend decides, on the one replica
that decided it (the webhook events; the bus announcement reaches every replica)."""


class Presence(Protocol):
    async def add(self, channel: str, conn_id: str, member: Member) -> None:
        """Record one connection of ``member``; announce ``join`` if it is the user's first."""

    async def add_all(self, entries: Sequence[tuple[str, str, Member]]) -> None:
        """``add`` each (channel, connection id, member), at once: a replica restoring thousands
        of entries one round trip each took longer than an entry lives."""

    async def remove(self, channel: str, conn_id: str, member: Member) -> None:
        """Forget one connection; announce ``leave`` if it was the user's last."""

    async def members(self, channel: str) -> list[tuple[Member, int]]:
        """Every user present (on any replica) with their number of connections."""

    async def refresh(self, entries: Iterable[tuple[str, Iterable[str]]]) -> list[tuple[str, str]]:
        """Keep this replica's live entries (channel, connection ids) from expiring; returns the
        (channel, connection id) pairs the backend no longer had (expired and swept: this
        replica stalled past their lifetime without its bus noticing), to be added back."""


def member_frame(kind: str, channel: str, user_json: str) -> str:
    """A ``join`` or ``leave`` frame; ``user_json`` is already encoded (channel names need no escaping)."""
    return f'{{"type":"{kind}","channel":"{channel}","user":{user_json}}}'


def members_of(users: dict[str, tuple[str | None, int]]) -> list[tuple[Member, int]]:
    return [(Member(uid, name), count) for uid, (name, count) in sorted(users.items())]


class MemoryPresence:
    """The embedded backend: exact, since every connection lives in this process."""

    def __init__(
        self,
        publish: Callable[[str, str], Awaitable[None]],
        on_transition: Transition | None = None,
    ) -> None:
        self._publish = publish
        self._on_transition = on_transition
        self._channels: dict[str, dict[str, tuple[Member, set[str]]]] = {}

    async def add(self, channel: str, conn_id: str, member: Member) -> None:
        users = self._channels.setdefault(channel, {})
        entry = users.get(member.id)
        if entry is None:
            users[member.id] = (member, {conn_id})
            await self._announce("join", channel, member)
        else:
            entry[1].add(conn_id)

    async def add_all(self, entries: Sequence[tuple[str, str, Member]]) -> None:
        for channel, conn_id, member in entries:
            await self.add(channel, conn_id, member)

    async def remove(self, channel: str, conn_id: str, member: Member) -> None:
        users = self._channels.get(channel, {})
        entry = users.get(member.id)
        if entry is None or conn_id not in entry[1]:
            return
        entry[1].discard(conn_id)
        if not entry[1]:
            del users[member.id]
            if not users:
                del self._channels[channel]
            await self._announce("leave", channel, member)

    async def members(self, channel: str) -> list[tuple[Member, int]]:
        users = self._channels.get(channel, {})
        return members_of({uid: (m.username, len(conns)) for uid, (m, conns) in users.items()})

    async def refresh(self, entries: Iterable[tuple[str, Iterable[str]]]) -> list[tuple[str, str]]:
        """Nothing expires here: entries live exactly as long as their connections."""
        return []

    async def _announce(self, kind: str, channel: str, member: Member) -> None:
        if self._on_transition is not None:
            self._on_transition(kind, channel, member)
        frame = member_frame(kind, channel, member.as_json())
        await self._publish(presence_topic(channel), frame)
