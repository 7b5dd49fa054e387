"""The per-user connection cap across replicas: every authenticated socket holds one of its user's
``WS_MAX_CONNECTIONS_PER_USER`` slots in a store that every replica shares.

A slot lapses unless the replica holding it refreshes it, as presence entries do, so the sockets
of a replica that died stop counting within the presence TTL.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

__all__ = ["Held", "UserSlots"]

Held = Iterable[tuple[str, Iterable[str]]]
"""This replica's slots: (user, slot ids) pairs."""


class UserSlots(Protocol):
    async def acquire(self, user: str, slot: str, limit: int) -> bool:
        """Take ``slot`` unless ``user`` already holds ``limit`` live ones, in one atomic step
        across replicas; True when taken (again: an acquire retried after it ran is one slot)."""

    async def release(self, user: str, slot: str) -> None:
        """Give the slot back (the socket closed)."""

    async def refresh(self, held: Held) -> list[str]:
        """Keep these slots from lapsing; a slot released meanwhile stays released. Returns the
        users some of whose slots were not there to keep (released, or lapsed while this
        replica stalled)."""

    async def restore(self, held: Held) -> None:
        """Hold these slots again, past the limit if need be: the store lost them, or they were
        taken while it was unreachable. The sockets are open; only new ones are refused."""
