"""What auth_service has revoked, remembered until no token it covers can still be valid."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from shared.events import RevocationEvent, SessionRevoked, UserRevoked
from shared.revocation_ledger import TokenRef

__all__ = ["RevocationLedger", "RevocationRegistry"]


class RevocationLedger(Protocol):
    """The replica-wide record of revocations (Redis in a scaled deployment).

    ``revoked`` answers for many tokens in one round trip and raises
    ``shared.bus_errors.BusUnavailable`` when the record cannot be reached.
    """

    async def revoked(self, tokens: Sequence[TokenRef]) -> list[bool]: ...


class RevocationRegistry:
    """sid -> until and sub -> (issued_before, until); entries vanish once ``until`` plus
    ``leeway`` has passed, because the verifier accepts a token until its ``exp`` plus that leeway
    and ``until`` is only the latest ``exp``."""

    def __init__(self, clock: Callable[[], float] = time.time, *, leeway: int = 0) -> None:
        self._clock = clock
        self._leeway = leeway
        self._sessions: dict[str, int] = {}
        self._users: dict[str, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self._sessions) + len(self._users)

    def apply(self, event: RevocationEvent) -> None:
        self.prune()
        until = event.until + self._leeway
        if isinstance(event, SessionRevoked):
            self._sessions[event.sid] = max(until, self._sessions.get(event.sid, 0))
        elif isinstance(event, UserRevoked):
            before, known = self._users.get(event.sub, (0, 0))
            self._users[event.sub] = (max(before, event.issued_before), max(known, until))

    def is_revoked(self, sub: str, sid: str, iat: int) -> bool:
        now = self._clock()
        until = self._sessions.get(sid)
        if until is not None and now <= until:
            return True
        user = self._users.get(sub)
        return user is not None and now <= user[1] and iat < user[0]

    def prune(self) -> None:
        now = self._clock()
        self._sessions = {sid: u for sid, u in self._sessions.items() if u >= now}
        self._users = {sub: v for sub, v in self._users.items() if v[1] >= now}
