"""What auth_service has revoked, remembered until no token it covers can still be valid."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

from realtime_gateway_protocol.events import RevocationEvent, SessionRevoked, UserRevoked

__all__ = ["RevocationRegistry"]


class RevocationRegistry:
    """sid -> until and sub -> (issued_before, until); entries vanish once ``until`` plus
    ``leeway`` has passed, because the verifier accepts a token until its ``exp`` plus that leeway
    and ``until`` is only the latest ``exp``."""

    def __init__(self, clock: Callable[[], float] = time.time, *, leeway: int = 0) -> None:
        self._clock = clock
        self._leeway = leeway
        self._sessions: dict[str, int] = {}
        self._users: dict[str, tuple[int, int]] = {}
        # (until, is_user, key), oldest first: pruning pops expired entries instead of rebuilding
        # both tables on every event. A popped entry whose table row was extended is stale.
        self._expiries: list[tuple[int, bool, str]] = []

    def __len__(self) -> int:
        return len(self._sessions) + len(self._users)

    def apply(self, event: RevocationEvent) -> None:
        self.prune()
        until = event.until + self._leeway
        if isinstance(event, SessionRevoked):
            kept = self._sessions[event.sid] = max(until, self._sessions.get(event.sid, 0))
            heapq.heappush(self._expiries, (kept, False, event.sid))
        elif isinstance(event, UserRevoked):
            before, known = self._users.get(event.sub, (0, 0))
            kept = max(known, until)
            self._users[event.sub] = (max(before, event.issued_before), kept)
            heapq.heappush(self._expiries, (kept, True, event.sub))

    def is_revoked(self, sub: str, sid: str, iat: int) -> bool:
        now = self._clock()
        until = self._sessions.get(sid)
        if until is not None and now <= until:
            return True
        user = self._users.get(sub)
        return user is not None and now <= user[1] and iat < user[0]

    def prune(self) -> None:
        now = self._clock()
        while self._expiries and self._expiries[0][0] < now:
            until, is_user, key = heapq.heappop(self._expiries)
            if is_user:
                if self._users.get(key, (0, None))[1] == until:
                    del self._users[key]
            elif self._sessions.get(key) == until:
                del self._sessions[key]
