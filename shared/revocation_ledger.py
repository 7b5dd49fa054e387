"""The revocation ledger: revocations recorded so that none is lost between replicas.

Pub/sub forgets what it could not deliver, so auth_service also records every revocation with an
expiry equal to the covered tokens' remaining life (``until``). ws replicas check this record on
every auth and renewal, and reconcile their live sockets against it after a gap. The Redis
implementation is ``shared.redis_ledger``; this module imports no backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from shared.access_token import TokenRef
from shared.events import RevocationEvent

__all__ = ["RevocationLedger"]


class RevocationLedger(Protocol):
    """auth_service records; ws_service asks. Both raise ``BusUnavailable`` when unreachable."""

    async def record(self, event: RevocationEvent, now: float | None = None) -> None: ...

    async def revoked(self, tokens: Sequence[TokenRef]) -> list[bool]:
        """For each token, whether it is revoked (one round trip for all)."""
        ...
